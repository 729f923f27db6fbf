import { sql, type DatabasePool } from "slonik";
import { z } from "zod";
import type { Logger } from "../log.ts";
import { describeError } from "../runtime/errors.ts";

export interface SweeperConfig {
  pool: DatabasePool;
  log: Logger;
  /** A worker silent for longer than this is dead, ms. */
  deadAfterMs: number;
  intervalMs: number;
}

export interface SweepResult {
  deadWorkers: number;
  deadLettered: number;
  completed: number;
  pruned: number;
  /** Due jobs of tasks no live worker runs, per task. */
  unknownTasks: readonly UnknownTask[];
}

export interface UnknownTask {
  task: string;
  jobs: number;
}

const BATCH = 500;

const UnknownTaskRow = z.object({ task: z.string(), jobs: z.coerce.number() });

const DeadWorker = z.object({ id: z.string(), locker_ids: z.array(z.string()) });
const ExhaustedJob = z.object({
  id: z.coerce.string(),
  revision: z.number(),
  applied: z.boolean(),
  superseded: z.boolean(),
});

/**
 * Housekeeping that any live worker may run; every statement is safe to run concurrently
 * from many workers:
 *  - releases the jobs of dead workers (heartbeat older than the threshold), so they run
 *    again within seconds instead of after graphile-worker's 4-hour lock expiry;
 *  - moves jobs graphile-worker has given up on (attempts exhausted, e.g. the process died
 *    during the final attempt) into dead_letters, or completes them if their effects
 *    already committed or a newer job with their job_key superseded them;
 *  - prunes ledger and failure rows of jobs that have left the queue;
 *  - logs, once per task name, due jobs that no live worker runs: graphile-worker fetches only
 *    the tasks a worker has, so without this line they would wait forever in silence.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<SweepResult> | null = null;
  /** Unknown tasks already logged; a task leaves the set once it is no longer unknown. */
  private readonly reported = new Set<string>();

  constructor(private readonly config: SweeperConfig) {}

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
    const { deadLettered, completed } = await this.retireExhaustedJobs();
    const pruned = await this.pruneLedger();
    const unknownTasks = await this.reportUnknownTasks();
    return { deadWorkers, deadLettered, completed, pruned, unknownTasks };
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

  private async retireExhaustedJobs(): Promise<{ deadLettered: number; completed: number }> {
    const { pool, log } = this.config;
    return pool.transaction(async (tx) => {
      const jobs = await tx.any(sql.type(ExhaustedJob)`
        select jobs.id, jobs.revision,
               exists (select 1 from job_ledger l where l.job_id = jobs.id and l.revision = jobs.revision) as applied,
               exists (select 1 from superseded_jobs s where s.job_id = jobs.id) as superseded
        from graphile_worker._private_jobs as jobs
        where jobs.attempts >= jobs.max_attempts and jobs.locked_at is null
        order by jobs.id
        limit ${BATCH}
        for update of jobs skip locked
      `);
      if (jobs.length === 0) return { deadLettered: 0, completed: 0 };
      // A superseded job's work belongs to the newer job with its key: it is done, not dead.
      const toDeadLetter = jobs.filter((job) => !job.applied && !job.superseded).map((job) => job.id);
      if (toDeadLetter.length > 0) {
        await tx.query(sql.unsafe`
          with moved as (
            insert into dead_letters
              (job_id, revision, task, queue_name, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
            select jobs.id, jobs.revision, tasks.identifier, queues.queue_name, coalesce(jobs.payload::jsonb, 'null'::jsonb),
                   'exhausted', jobs.attempts, jobs.max_attempts,
                   coalesce(nullif(jobs.last_error, ''), 'attempts exhausted without a recorded error'),
                   coalesce(failures.first_failed_at, jobs.updated_at), greatest(jobs.updated_at, failures.first_failed_at)
            from graphile_worker._private_jobs as jobs
            join graphile_worker._private_tasks as tasks on tasks.id = jobs.task_id
            left join graphile_worker._private_job_queues as queues on queues.id = jobs.job_queue_id
            left join job_failures as failures on failures.job_id = jobs.id and failures.revision = jobs.revision
            where jobs.id = any(${sql.array(toDeadLetter, "int8")})
            on conflict (job_id, revision) do nothing
            returning job_id, revision, task
          )
          insert into job_ledger (job_id, revision, task, outcome)
          select job_id, revision, task, 'dead' from moved
          on conflict do nothing
        `);
        log.error({ jobIds: toDeadLetter }, "jobs exhausted their attempts; moved to dead_letters");
      }
      await tx.query(sql.unsafe`select graphile_worker.complete_jobs(${sql.array(jobs.map((job) => job.id), "int8")})`);
      return { deadLettered: toDeadLetter.length, completed: jobs.length - toDeadLetter.length };
    });
  }

  private async pruneLedger(): Promise<number> {
    const { pool } = this.config;
    // Job ids are never reused, so a record of a job that has left the queue is history.
    const ledger = await pool.query(sql.unsafe`
      delete from job_ledger
      where (job_id, revision) in (
        select l.job_id, l.revision from job_ledger l
        where not exists (select 1 from graphile_worker._private_jobs j where j.id = l.job_id)
        limit ${BATCH}
      )
    `);
    const failures = await pool.query(sql.unsafe`
      delete from job_failures
      where (job_id, revision) in (
        select f.job_id, f.revision from job_failures f
        where not exists (select 1 from graphile_worker._private_jobs j where j.id = f.job_id)
        limit ${BATCH}
      )
    `);
    const superseded = await pool.query(sql.unsafe`
      delete from superseded_jobs
      where job_id in (
        select s.job_id from superseded_jobs s
        where not exists (select 1 from graphile_worker._private_jobs j where j.id = s.job_id)
        limit ${BATCH}
      )
    `);
    return ledger.rowCount + failures.rowCount + superseded.rowCount;
  }
}
