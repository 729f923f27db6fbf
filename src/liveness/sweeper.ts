import { sql, type DatabasePool } from "slonik";
import { z } from "zod";
import type { Logger } from "../log.ts";
import { freeStaleSlots, takeWaitersOfFreeLimits } from "../flow/queries.ts";
import { freeStaleProbes } from "../flow/serviceQueries.ts";
import { describeError } from "../runtime/errors.ts";
import { deadLetterExhaustedJobs, lockExhaustedJobs, pruneRecordsOfFinishedJobs, wakeJobs } from "../runtime/graphileJobs.ts";

export interface SweeperConfig {
  pool: DatabasePool;
  log: Logger;
  /** A worker silent for longer than this is dead, ms. */
  deadAfterMs: number;
  intervalMs: number;
  /** Days of job history kept (JOB_HISTORY_RETENTION_DAYS). */
  historyRetentionDays: number;
}

export interface SweepResult {
  deadWorkers: number;
  deadLettered: number;
  completed: number;
  pruned: number;
  /** Daily job_history partitions dropped (the history is pruned once an hour, and on the first sweep). */
  historyPartitionsDropped: number;
  /** Due jobs of tasks no live worker runs, per task. */
  unknownTasks: readonly UnknownTask[];
  /** Fleet-wide limit slots freed because their holder no longer held the job (e.g. its worker died). */
  flowSlotsFreed: number;
  /** Parked jobs woken because their limit had free slots. */
  flowWaitersWoken: number;
  /** Services whose circuit probe lease was given up because its job had left its prober (e.g. its worker died). */
  serviceProbesFreed: readonly string[];
}

export interface UnknownTask {
  task: string;
  jobs: number;
}

const BATCH = 500;
/** How often the job history is pruned: its partitions are days, so hourly is plenty. */
const HISTORY_PRUNE_INTERVAL_MS = 3_600_000;

const UnknownTaskRow = z.object({ task: z.string(), jobs: z.coerce.number() });

const DeadWorker = z.object({ id: z.string(), locker_ids: z.array(z.string()) });

/**
 * Housekeeping that any live worker may run; every statement is safe to run concurrently
 * from many workers:
 *  - releases the jobs of dead workers (heartbeat older than the threshold), so they run
 *    again within seconds instead of after graphile-worker's 4-hour lock expiry;
 *  - moves jobs graphile-worker has given up on (attempts exhausted, e.g. the process died
 *    during the final attempt) into dead_letters, or completes them if their effects
 *    already committed or a newer job with their job_key superseded them;
 *  - frees fleet-wide limit slots held for jobs their holder no longer holds, and wakes jobs
 *    waiting for a limit that has free slots; gives up circuit probe leases likewise;
 *  - prunes ledger and failure rows of jobs that have left the queue;
 *  - logs, once per task name, due jobs that no live worker runs: graphile-worker fetches only
 *    the tasks a worker has, so without this line they would wait forever in silence.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<SweepResult> | null = null;
  /** Unknown tasks already logged; a task leaves the set once it is no longer unknown. */
  private readonly reported = new Set<string>();
  /** When the job history was last pruned (performance.now()); null: not yet. */
  private historyPrunedAt: number | null = null;

  private readonly config: SweeperConfig;

  constructor(config: SweeperConfig) {
    this.config = config;
  }

  start(): void {
    if (this.timer) return;
    this.schedule();
    // At start too, not only after the first interval: the jobs may be waiting already.
    void this.reportUnknownTasks().catch((error) =>
      this.config.log.warn({ error: describeError(error) }, "could not look for jobs of unknown tasks; retrying at the next sweep"),
    );
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => {});
  }

  sweep(): Promise<SweepResult> {
    this.running ??= this.sweepOnce().finally(() => (this.running = null));
    return this.running;
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.sweep()
        .catch((error) => this.config.log.warn({ error: describeError(error) }, "sweep failed; retrying at the next interval"))
        .finally(() => {
          if (this.timer) this.schedule();
        });
    }, this.config.intervalMs);
  }

  private async sweepOnce(): Promise<SweepResult> {
    const deadWorkers = await this.releaseDeadWorkers();
    const { flowSlotsFreed, flowWaitersWoken, serviceProbesFreed } = await this.sweepFlow();
    const { deadLettered, completed } = await this.retireExhaustedJobs();
    const pruned = await this.pruneLedger();
    const historyPartitionsDropped = await this.pruneHistory();
    const unknownTasks = await this.reportUnknownTasks();
    return { deadWorkers, deadLettered, completed, pruned, historyPartitionsDropped, unknownTasks, flowSlotsFreed, flowWaitersWoken, serviceProbesFreed };
  }

  /** Due jobs of tasks no live worker runs (sql/000003), each task logged once while it lasts. */
  async reportUnknownTasks(): Promise<readonly UnknownTask[]> {
    const { pool, log, deadAfterMs } = this.config;
    const unknown = await pool.any(sql.type(UnknownTaskRow)`select task, jobs from pgconverge_unknown_tasks(${deadAfterMs}) order by task`);
    for (const { task, jobs } of unknown) {
      if (this.reported.has(task)) continue;
      this.reported.add(task);
      log.warn({ task, jobs }, `${jobs} job(s) of task ${JSON.stringify(task)} wait, but no live worker has that task; start one that does, or remove them`);
    }
    const current = new Set(unknown.map((row) => row.task));
    for (const task of this.reported) if (!current.has(task)) this.reported.delete(task);
    return unknown;
  }

  private async releaseDeadWorkers(): Promise<number> {
    const { pool, log, deadAfterMs } = this.config;
    return pool.transaction(async (tx) => {
      const dead = await tx.any(sql.type(DeadWorker)`
        delete from workers
        where heartbeat_at < now() - make_interval(secs => ${deadAfterMs / 1000})
        returning id, locker_ids
      `);
      const lockers = dead.flatMap((worker) => worker.locker_ids);
      if (lockers.length > 0) {
        await tx.query(sql.unsafe`select graphile_worker.force_unlock_workers(${sql.array(lockers, "text")})`);
      }
      for (const worker of dead) log.warn({ deadWorker: worker.id }, "worker stopped heartbeating; its jobs were released");
      return dead.length;
    });
  }

  /**
   * Fleet-wide limits (sql/000005): frees the slots whose holder no longer holds the job (right
   * after releaseDeadWorkers, so a dead worker's slots come back within the dead-worker
   * threshold), then wakes the oldest waiters of every limit with free slots (a wake that was
   * lost, e.g. a release that failed), all under the limits' row locks; and gives up the circuit
   * probe leases (sql/000008) of jobs their prober no longer holds, so a killed prober does not
   * keep a half-open circuit to itself until its lease ends. Cheap when no limit or service exists.
   */
  private async sweepFlow(): Promise<{ flowSlotsFreed: number; flowWaitersWoken: number; serviceProbesFreed: readonly string[] }> {
    const { pool, log } = this.config;
    return pool.transaction(async (tx) => {
      const flowSlotsFreed = await freeStaleSlots(tx);
      const waiters = await takeWaitersOfFreeLimits(tx);
      const flowWaitersWoken = waiters.length > 0 ? await wakeJobs(tx, waiters, 0) : 0;
      const serviceProbesFreed = await freeStaleProbes(tx);
      if (flowSlotsFreed > 0) log.warn({ slots: flowSlotsFreed }, "fleet-wide limit slots of jobs no longer held by their worker were freed");
      if (serviceProbesFreed.length > 0) log.warn({ services: serviceProbesFreed }, "circuit probe leases of jobs no longer held by their worker were given up; the next call probes");
      return { flowSlotsFreed, flowWaitersWoken, serviceProbesFreed };
    });
  }

  private async retireExhaustedJobs(): Promise<{ deadLettered: number; completed: number }> {
    const { pool, log } = this.config;
    return pool.transaction(async (tx) => {
      const jobs = await lockExhaustedJobs(tx, BATCH);
      if (jobs.length === 0) return { deadLettered: 0, completed: 0 };
      // A superseded job's work belongs to the newer job with its key: it is done, not dead.
      const toDeadLetter = jobs.filter((job) => !job.applied && !job.superseded).map((job) => job.id);
      if (toDeadLetter.length > 0) {
        await deadLetterExhaustedJobs(tx, toDeadLetter);
        log.error({ jobIds: toDeadLetter }, "jobs exhausted their attempts; moved to dead_letters");
      }
      await tx.query(sql.unsafe`select graphile_worker.complete_jobs(${sql.array(jobs.map((job) => job.id), "int8")})`);
      return { deadLettered: toDeadLetter.length, completed: jobs.length - toDeadLetter.length };
    });
  }

  /**
   * Once an hour: makes the coming week's job_history partitions, moves into them any rows the
   * default partition caught, and drops the days past the retention (pgconverge_prune_job_history,
   * sql/000006; one worker at a time; it never keeps the jobs writing history waiting for more
   * than 50 ms). A failure (e.g. a login not granted EXECUTE on it) is logged and the sweep goes
   * on; the next try is an hour later.
   */
  async pruneHistory(): Promise<number> {
    if (this.historyPrunedAt !== null && performance.now() - this.historyPrunedAt < HISTORY_PRUNE_INTERVAL_MS) return 0;
    this.historyPrunedAt = performance.now();
    const { pool, log, historyRetentionDays } = this.config;
    try {
      return await pool.oneFirst(sql.type(z.object({ dropped: z.number() }))`select pgconverge_prune_job_history(${historyRetentionDays}) as dropped`);
    } catch (error) {
      log.warn({ error: describeError(error) }, "could not maintain the job history's partitions; retrying in an hour");
      return 0;
    }
  }

  private async pruneLedger(): Promise<number> {
    const { pool } = this.config;
    // Job ids are never reused, so a record of a job that has left the queue is history.
    return pruneRecordsOfFinishedJobs(pool, BATCH);
  }
}
