import type { DatabasePool } from "slonik";
import type { Logger } from "../log.ts";
import { describeError } from "../runtime/errors.ts";
import { jobsLockedBy, jobsStillLockedBy, releaseLostJobs } from "../runtime/graphileJobs.ts";

export interface LostJobsConfig {
  pool: DatabasePool;
  log: Logger;
  /** This process's lock holder ids (its graphile-worker pool's and workers'). */
  lockers: () => readonly string[];
  /** Time between two looks at the jobs locked under them, ms. */
  intervalMs: number;
  /** A monotonic clock in ms (tests set their own). Default performance.now. */
  now?: () => number;
  /**
   * Ended jobs kept before asking which of them are still locked, to forget the others.
   * Default 4,096: at 10,000 jobs/s, a small query a few times a second instead of 600,000 ids
   * kept between two looks.
   */
  forgetAfter?: number;
}

const DEFAULT_FORGET_AFTER = 4_096;

/**
 * Jobs locked under this process's lock holders that nothing in it runs or has queued, released
 * while the process lives. A fetch locks its jobs and returns them in one statement; when the
 * connection is lost after the server ran it and before its reply arrived, the jobs stay locked
 * under a live worker that never saw them, and its heartbeat keeps that lock fresh for good.
 * (A stopping worker releases them with its registration; this is for one that goes on.)
 *
 * The process says which jobs it holds (hold, from graphile-worker's events: fetched into its
 * local queue or started) and which it is done with (drop: returned or ended). A dropped job stays
 * held until it is found no longer locked under this process (by a look, or by a check of the
 * ended jobs whenever a few thousand have gathered): graphile-worker's statements
 * that return or complete it run after those events, and are retried for minutes when the
 * database is away. So the only candidates are jobs no event ever reported, and one is lost only
 * if it is seen so at two looks at least half an interval apart, at the same lock time: a fetch
 * whose reply was still on its way at the first look has been reported by the second. Releasing a
 * job that did run would cost a wasted run, not a second commit: its transaction checks the lock
 * it started under.
 */
export class LostJobs {
  private readonly held = new Set<string>();
  /**
   * Held jobs the process is done with, forgotten once found unlocked; each with the count of
   * drops when it was dropped, so that a read taken before a job was held and dropped again
   * does not forget it.
   */
  private readonly dropped = new Map<string, number>();
  private drops = 0;
  private forgetting: Promise<void> | null = null;
  /** The count of ended jobs at which to check them next (doubles while they stay locked, as in an outage). */
  private forgetAt: number;
  private stopped = false;
  /** Jobs seen locked and not held at the last look, with their lock times, and when that look read them. */
  private suspects = new Map<string, string>();
  private suspectsSeenAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<number> | null = null;

  private readonly config: LostJobsConfig;

  constructor(config: LostJobsConfig) {
    this.config = config;
    this.forgetAt = this.forgetAfter;
  }

  private get forgetAfter(): number {
    return this.config.forgetAfter ?? DEFAULT_FORGET_AFTER;
  }

  // Ids as strings: an application's pool may parse int8 otherwise.
  hold(jobId: string | number): void {
    const id = String(jobId);
    this.held.add(id);
    this.dropped.delete(id);
  }

  drop(jobId: string | number): void {
    const id = String(jobId);
    if (!this.held.has(id)) return;
    this.dropped.set(id, ++this.drops);
    if (this.dropped.size >= this.forgetAt && !this.stopped) void this.forgetEnded();
  }

  /** How many jobs are held, ended ones not yet forgotten included. */
  get holding(): number {
    return this.held.size;
  }

  /** Whether a check of the ended jobs is under way. */
  get checking(): boolean {
    return this.forgetting !== null;
  }

  /**
   * Forgets the ended jobs no longer locked under this process (their outcomes recorded), so
   * that what is kept stays bounded by the jobs in flight, not by the throughput. Never throws.
   */
  forgetEnded(): Promise<void> {
    this.forgetting ??= this.forgetEndedOnce().finally(() => (this.forgetting = null));
    return this.forgetting;
  }

  private async forgetEndedOnce(): Promise<void> {
    const readAfter = this.drops;
    try {
      const lockers = this.config.lockers();
      // No holders yet: nothing can be locked under them, and every job would look unlocked.
      if (lockers.length > 0) this.forgetUnlocked(await jobsStillLockedBy(this.config.pool, lockers, [...this.dropped.keys()]), readAfter);
    } catch (error) {
      this.config.log.warn({ error: describeError(error) }, "checking which ended jobs are unlocked failed; retrying later");
    }
    this.rearm();
  }

  /** Forgets the jobs dropped before a read (drop count readAfter) that did not find them locked. */
  private forgetUnlocked(locked: ReadonlySet<string>, readAfter: number): void {
    for (const [id, droppedAt] of this.dropped) {
      if (droppedAt <= readAfter && !locked.has(id)) {
        this.held.delete(id);
        this.dropped.delete(id);
      }
    }
  }

  /** The next check when twice what is kept now has gathered (an outage: a few checks, not one per job). */
  private rearm(): void {
    this.forgetAt = Math.max(this.forgetAfter, 2 * this.dropped.size);
  }

  start(): void {
    this.stopped = false;
    if (this.timer) return;
    this.timer = setInterval(() => void this.look(), this.config.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    // Jobs ended after this (a late outcome at a forced shutdown) start no check on a pool being closed.
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all([this.running, this.forgetting]);
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
      const readAt = this.config.now ? this.config.now() : performance.now();
      const readAfter = this.drops;
      const locked = await jobsLockedBy(pool, lockers);
      this.forgetUnlocked(new Set(locked.map((job) => job.id)), readAfter);
      this.rearm();
      const unheld = locked.filter((job) => !this.held.has(job.id));
      const apart = readAt - this.suspectsSeenAt >= this.config.intervalMs / 2;
      const lost = apart ? unheld.filter((job) => this.suspects.get(job.id) === job.lockedAt) : [];
      // A look too soon after the last (the timer firing right after a slow look) keeps the
      // earlier suspects and their time, unless there were none.
      if (apart || this.suspects.size === 0) {
        this.suspects = new Map(unheld.filter((job) => !lost.includes(job)).map((job) => [job.id, job.lockedAt]));
        this.suspectsSeenAt = readAt;
      }
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
