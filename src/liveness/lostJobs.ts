import type { DatabasePool } from "slonik";
import type { Logger } from "../log.ts";
import { describeError } from "../runtime/errors.ts";
import { jobsLockedBy, releaseLostJobs } from "../runtime/graphileJobs.ts";

export interface LostJobsConfig {
  pool: DatabasePool;
  log: Logger;
  /** This process's lock holder ids (its graphile-worker pool's and workers'). */
  lockers: () => readonly string[];
  /** Time between two looks at the jobs locked under them, ms. */
  intervalMs: number;
}

/**
 * Jobs locked under this process's lock holders that nothing in it runs or has queued, released
 * while the process lives. A fetch locks its jobs and returns them in one statement; when the
 * connection is lost after the server ran it and before its reply arrived, the jobs stay locked
 * under a live worker that never saw them, and its heartbeat keeps that lock fresh for good.
 * (A stopping worker releases them with its registration; this is for one that goes on.)
 *
 * The process says which jobs it holds (hold/drop, from graphile-worker's events: fetched into
 * its local queue or started; returned or ended). A job locked under its holders that it does not
 * hold is lost only if it is seen so twice, at the same lock time, a whole interval apart: a
 * fetch whose reply is still on its way, or an outcome still being recorded, is gone from the
 * list or held by then. Releasing a job that did run would cost a wasted run, not a second
 * commit: its transaction checks the lock it started under.
 */
export class LostJobs {
  private readonly held = new Set<string>();
  /** Jobs seen locked and not held at the last look, with their lock times. */
  private suspects = new Map<string, string>();
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number> | null = null;

  private readonly config: LostJobsConfig;

  constructor(config: LostJobsConfig) {
    this.config = config;
  }

  hold(jobId: string): void {
    this.held.add(jobId);
  }

  drop(jobId: string): void {
    this.held.delete(jobId);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.look(), this.config.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }

  /** One look: releases the jobs lost since the last; returns how many. Never throws. */
  look(): Promise<number> {
    this.running ??= this.lookOnce().finally(() => (this.running = null));
    return this.running;
  }

  private async lookOnce(): Promise<number> {
    const { pool, log } = this.config;
    const lockers = this.config.lockers();
    if (lockers.length === 0) return 0;
    try {
      const unheld = (await jobsLockedBy(pool, lockers)).filter((job) => !this.held.has(job.id));
      const lost = unheld.filter((job) => this.suspects.get(job.id) === job.lockedAt);
      this.suspects = new Map(unheld.filter((job) => !lost.includes(job)).map((job) => [job.id, job.lockedAt]));
      if (lost.length === 0) return 0;
      const released = await releaseLostJobs(pool, lockers, lost);
      if (released > 0) log.warn({ jobIds: lost.map((job) => job.id), released }, "released jobs locked by this worker that it was not running (a fetch whose reply was lost)");
      return released;
    } catch (error) {
      log.warn({ error: describeError(error) }, "looking for lost jobs failed; retrying at the next interval");
      return 0;
    }
  }
}
