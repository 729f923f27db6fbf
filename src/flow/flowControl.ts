import type { Job } from "graphile-worker";
import { UniqueIntegrityConstraintViolationError, type DatabasePool } from "slonik";
import type { Logger } from "../log.ts";
import { describeError } from "../runtime/errors.ts";
import { runtimeEvents } from "../runtime/events.ts";
import { JobParkedError, JobTakenOverError } from "../runtime/executor.ts";
import { parkJob, wakeJobs } from "../runtime/graphileJobs.ts";
import type { FlowLimit } from "./options.ts";
import { dropOwnSlots, freeSlots, lockLimits, takeFreeSlot, takeSlots, upsertLimits } from "./queries.ts";

export interface FlowControlConfig {
  pool: DatabasePool;
  log: Logger;
  /** The limits of each limited task this worker runs (resolveLimits); a task absent here is never checked. */
  limits: ReadonlyMap<string, readonly FlowLimit[]>;
  /**
   * How long a parked job waits at most before it runs again and checks its limit once more,
   * ms: a safety net only, since a release (or the sweeper) wakes it as soon as a slot is free.
   */
  parkTimeoutMs?: number;
}

/** Default parkTimeoutMs: long enough never to matter while wakes work, short enough to bound a lost one. */
const PARK_TIMEOUT_MS = 10 * 60_000;

/** The slots an admitted job holds; release() once, when the job ends, however it ends. */
export interface Admission {
  release(): Promise<void>;
}

/**
 * Fleet-wide concurrency limits (sql/000005_flow_limits.sql). Before a limited job's prepare
 * the executor asks `admit(job)`: one transaction takes a slot of each of the job's limits, or,
 * if one is full, records the job as waiting and parks it (attempt not counted) in that same
 * transaction, under the full limit's row lock, so a release, which wakes waiters under that
 * lock, cannot miss it. A job of a task without limits costs nothing: no query at all.
 */
export class FlowControl {
  private readonly ids = new Map<string, number[]>();
  private readonly parkTimeoutMs: number;

  private readonly config: FlowControlConfig;

  constructor(config: FlowControlConfig) {
    this.config = config;
    this.parkTimeoutMs = config.parkTimeoutMs ?? PARK_TIMEOUT_MS;
  }

  /** Whether this task's jobs go through admit (it has a limit). */
  limits(task: string): boolean {
    return this.config.limits.has(task);
  }

  /**
   * Writes this worker's limits to the table; the latest worker to start wins, and a size that
   * changes what another worker wrote is logged as a warning (keep the fleet's settings equal).
   */
  async install(): Promise<void> {
    const { pool, log, limits } = this.config;
    const unique = new Map<string, FlowLimit>();
    for (const each of [...limits.values()].flat()) unique.set(`${each.kind}:${each.name}`, each);
    if (unique.size === 0) return;
    const rows = await upsertLimits(pool, [...unique.values()]);
    const idOf = new Map(rows.map((row) => [`${row.kind}:${row.name}`, row.id]));
    for (const row of rows) {
      const wanted = unique.get(`${row.kind}:${row.name}`)!.maxRunning;
      if (row.previous !== null && row.previous !== wanted) {
        log.warn({ kind: row.kind, name: row.name, was: row.previous, now: wanted }, `fleet-wide ${row.kind} limit ${row.name} changed from ${row.previous} to ${wanted} by this worker's start (the latest start wins; give every worker the same limits)`);
      }
    }
    for (const [task, taskLimits] of limits) {
      // Ids ascending: every transaction locks limit rows in the same order.
      this.ids.set(task, taskLimits.map((each) => idOf.get(`${each.kind}:${each.name}`)!).sort((a, b) => a - b));
    }
    log.info({ limits: [...unique.values()] }, "fleet-wide concurrency limits written");
  }

  /**
   * Takes the job's slots, or parks it and throws JobParkedError (graphile-worker then changes
   * nothing: the job is no longer locked by this worker). Throws JobTakenOverError when the job
   * was taken from this worker meanwhile. Only for a task for which limits() is true.
   */
  async admit(job: Job): Promise<Admission> {
    const task = job.task_identifier;
    const ids = this.ids.get(task);
    if (ids === undefined) throw new Error(`flow control: task ${task} has no limits installed`);
    const runAt = new Date(Date.now() + this.parkTimeoutMs);
    const admitted = await this.takeOrParkOnce(ids, job, runAt).catch(async (error: unknown) => {
      if (!(error instanceof UniqueIntegrityConstraintViolationError)) throw error;
      // A slot of this job under this same lock holder is left from an earlier run of it
      // whose release failed (it is logged, not thrown): this run is the job's only one
      // here, so that slot is stale. Freed, the admission is tried again.
      this.config.log.warn({ jobId: job.id }, "a fleet-wide slot left by an earlier run of this job was freed");
      await this.config.pool.transaction((tx) => dropOwnSlots(tx, job));
      return this.takeOrParkOnce(ids, job, runAt);
    });
    if (!admitted) {
      const event = { task, jobId: job.id, attempt: job.attempts, runAt, reason: "fleet-wide concurrency limit full" };
      runtimeEvents.emit("job:deferred", event);
      this.config.log.debug({ task, jobId: job.id }, "fleet-wide limit full; job parked until a slot is freed");
      throw new JobParkedError(`job ${job.id} waits for a slot of its fleet-wide concurrency limit`);
    }
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        await this.release(ids, job);
      },
    };
  }

  /** One statement when a slot of the job's only limit is free, the usual case; else takeOrPark. */
  private async takeOrParkOnce(ids: readonly number[], job: Job, runAt: Date): Promise<boolean> {
    return (ids.length === 1 && (await takeFreeSlot(this.config.pool, ids[0]!, job))) || (await this.takeOrPark(ids, job, runAt));
  }

  /** Under the limits' row locks: takes the job's slots, or records it as waiting and parks it until runAt. */
  private takeOrPark(ids: readonly number[], job: Job, runAt: Date): Promise<boolean> {
    return this.config.pool.transaction(async (tx) => {
      if (await takeSlots(tx, ids, job)) return true;
      // Same transaction as the waiter rows: a release either sees both or precedes both.
      if (!(await parkJob(tx, job, runAt))) throw new JobTakenOverError(`job ${job.id} was released and taken over; not parking`);
      return false;
    });
  }

  /**
   * Frees the job's slots and takes the oldest waiters, as many as there are free slots, off the
   * waiting list under the limits' row locks, and wakes them, in one transaction: a waiter taken
   * off the list is parked already (its park committed with its waiter row), so were the wake
   * lost after the take (the worker killed between two commits), it would sleep to its park
   * timeout with nothing left to wake it. A failure is logged, not thrown: the job's outcome
   * stands, and the sweeper frees the slot once the job has left this worker.
   */
  private async release(ids: readonly number[], job: Job): Promise<void> {
    try {
      await this.config.pool.transaction(async (tx) => {
        // Locked first: freeSlots then picks waiters from a snapshot taken after the last release.
        await lockLimits(tx, ids);
        const waiters = await freeSlots(tx, ids, job);
        if (waiters.length > 0) await wakeJobs(tx, waiters, 0);
      });
    } catch (error) {
      this.config.log.warn({ jobId: job.id, error: describeError(error) }, "could not free the job's fleet-wide slot; the sweeper frees it once the job has ended");
    }
  }
}
