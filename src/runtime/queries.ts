import type { Job } from "graphile-worker";
import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";
import type { FollowUpJobSpec } from "./defineTask.ts";
import { checkJobSpec } from "./jobSpec.ts";
import { recordSuperseded } from "./graphileJobs.ts";

/** The runtime's SQL, one statement per function. */

/**
 * Writes the applied-record as the first statement of the apply transaction. A concurrent
 * run of the same job blocks on the primary key until this transaction ends, then finds
 * the row: false means "already recorded, change nothing".
 */
export async function claimLedger(tx: CommonQueryMethods, job: Job, outcome: "applied" | "dead"): Promise<boolean> {
  const inserted = await tx.maybeOneFirst(sql.type(z.object({ job_id: z.unknown() }))`
    insert into job_ledger (job_id, revision, task, outcome)
    values (${job.id}, ${job.revision}, ${job.task_identifier}, ${outcome})
    on conflict do nothing
    returning job_id
  `);
  return inserted !== null;
}

export async function isRecorded(pool: CommonQueryMethods, job: Job): Promise<boolean> {
  return pool.exists(sql.unsafe`
    select 1 from job_ledger where job_id = ${job.id} and revision = ${job.revision}
  `);
}

export async function recordFailure(pool: CommonQueryMethods, job: Job, error: string): Promise<void> {
  await pool.query(sql.unsafe`
    insert into job_failures (job_id, revision, failures, first_failed_at, last_failed_at, last_error)
    values (${job.id}, ${job.revision}, 1, now(), now(), ${error})
    on conflict (job_id, revision) do update
      set failures = job_failures.failures + 1, last_failed_at = now(), last_error = excluded.last_error
  `);
}

export async function insertDeadLetter(
  tx: CommonQueryMethods,
  job: Job,
  queueName: string | null,
  payload: unknown,
  reason: "permanent" | "exhausted",
  error: string,
): Promise<void> {
  await tx.query(sql.unsafe`
    insert into dead_letters
      (job_id, revision, task, queue_name, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
    select ${job.id}, ${job.revision}, ${job.task_identifier}, ${queueName}, ${sql.jsonb(payload as never)},
           ${reason}, ${job.attempts}, ${job.max_attempts}, ${error},
           coalesce((select first_failed_at from job_failures where job_id = ${job.id} and revision = ${job.revision}), now()),
           now()
  `);
}

/** One finished job, for its job_history row. */
export interface HistoryEntry {
  job: Job;
  outcome: "applied" | "dead" | "skipped";
  /** The error that dead-lettered it. */
  error?: string;
  /** What apply returned, as JSON text (already checked against JOB_RESULT_MAX_BYTES). */
  resultJson?: string | null;
}

/**
 * Writes the history rows of finished jobs, in the caller's transaction (the one holding
 * their effects), in one statement whatever their number. finished_at is the clock at insert.
 * One of the three writers of job_history (the others: claimBatch and deadLetterExhaustedJobs;
 * why there are three is in sql/000006): this one for jobs dead-lettered by their own worker and
 * re-runs found already applied before prepare.
 */
export async function recordHistory(tx: CommonQueryMethods, entries: readonly HistoryEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await tx.query(sql.unsafe`
    insert into job_history (job_id, revision, task, outcome, attempts, enqueued_at, started_at, last_error, result)
    select * from ${sql.unnest(
      entries.map(({ job, outcome, error, resultJson }) => [
        job.id,
        job.revision,
        job.task_identifier,
        outcome,
        job.attempts,
        new Date(job.created_at).toISOString(),
        job.locked_at === null ? null : new Date(job.locked_at).toISOString(),
        error ?? null,
        resultJson ?? null,
      ]),
      ["int8", "int4", "text", "text", "int4", "timestamptz", "timestamptz", "text", "jsonb"],
    )}
  `);
}

/**
 * Adds what apply returned to the history rows claimBatch wrote in this transaction, in one
 * statement (finished_at picks each row's partition). Only jobs that returned something.
 */
export async function setHistoryResults(tx: CommonQueryMethods, results: ReadonlyArray<{ job: Job; finishedAt: string; resultJson: string }>): Promise<void> {
  if (results.length === 0) return;
  await tx.query(sql.unsafe`
    update job_history set result = given.result
    from ${sql.unnest(
      results.map(({ job, finishedAt, resultJson }) => [job.id, job.revision, finishedAt, resultJson]),
      ["int8", "int4", "timestamptz", "jsonb"],
    )} as given (job_id, revision, finished_at, result)
    where job_history.finished_at = given.finished_at and job_history.job_id = given.job_id and job_history.revision = given.revision
  `);
}

/** Transactional enqueue through graphile-worker's public SQL API. */
export async function addJob(
  tx: CommonQueryMethods,
  identifier: string,
  payload: unknown,
  spec: FollowUpJobSpec = {},
): Promise<void> {
  checkJobSpec(spec, `addJob ${identifier}`);
  if (spec.jobKey) {
    // add_job is about to mark a running job with this key exhausted (see superseded_jobs):
    // record it first, in this transaction, so it is completed rather than dead-lettered.
    await recordSuperseded(tx, spec.jobKey);
  }
  await tx.query(sql.unsafe`
    select graphile_worker.add_job(
      identifier => ${identifier},
      payload => ${sql.json((payload ?? {}) as never)},
      queue_name => ${spec.queueName ?? null},
      run_at => ${spec.runAt ? spec.runAt.toISOString() : null}::timestamptz,
      max_attempts => ${spec.maxAttempts ?? null}::int,
      job_key => ${spec.jobKey ?? null},
      priority => ${spec.priority ?? null}::int,
      job_key_mode => ${spec.jobKeyMode ?? "replace"}
    )
  `);
}
