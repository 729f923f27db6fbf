import type { Job } from "graphile-worker";
import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";
import type { FollowUpJobSpec } from "./defineTask.ts";

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

/**
 * The start of a group-commit transaction, in one statement: sets the apply statement
 * timeout, row-locks the jobs this process still holds (same lock holder, same revision; in
 * id order, so two batches never wait on each other in a cycle) and writes their
 * applied-records. Returns, per held job, whether its record is new; a held job whose record
 * already existed was applied before, and a job missing from the answer was taken over.
 */
export async function claimBatch(tx: CommonQueryMethods, jobs: readonly Job[], applyTimeoutMs: number): Promise<Map<string, boolean>> {
  const mine = jobs.filter((job) => job.locked_by !== null);
  if (mine.length === 0) return new Map();
  const rows = await tx.any(sql.type(z.object({ id: z.coerce.string(), claimed: z.boolean() }))`
    with mine (id, revision, locked_by, task) as (
      select * from ${sql.unnest(
        mine.map((job) => [job.id, job.revision, job.locked_by!, job.task_identifier]),
        ["int8", "int4", "text", "text"],
      )}
    ), held as (
      select jobs.id, mine.revision, mine.task
      from graphile_worker._private_jobs as jobs
      join mine on jobs.id = mine.id and jobs.revision = mine.revision and jobs.locked_by = mine.locked_by
      order by jobs.id
      for update of jobs
    ), claimed as (
      insert into job_ledger (job_id, revision, task, outcome)
      select id, revision, task, 'applied' from held order by id
      on conflict do nothing
      returning job_id
    )
    select held.id, claimed.job_id is not null as claimed, set_config('statement_timeout', ${String(applyTimeoutMs)}, true)
    from held left join claimed on claimed.job_id = held.id
  `);
  return new Map(rows.map((row) => [row.id, row.claimed]));
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

/**
 * Locks the job row for the rest of the transaction and checks that this execution still
 * owns it: same lock holder, same revision. False means the job was released (its worker
 * was declared dead) and taken over or finished elsewhere, so this run must not commit.
 * Holding the row lock also keeps the sweeper from releasing it until we commit.
 */
export async function holdsJobLock(tx: CommonQueryMethods, job: Job): Promise<boolean> {
  if (job.locked_by === null) return false;
  return tx.exists(sql.unsafe`
    select 1 from graphile_worker._private_jobs
    where id = ${job.id} and revision = ${job.revision} and locked_by = ${job.locked_by}
    for update
  `);
}

/** Transactional enqueue through graphile-worker's public SQL API. */
export async function addJob(
  tx: CommonQueryMethods,
  identifier: string,
  payload: unknown,
  spec: FollowUpJobSpec = {},
): Promise<void> {
  if (spec.jobKey) {
    // add_job is about to mark a running job with this key exhausted (see superseded_jobs):
    // record it first, in this transaction, so it is completed rather than dead-lettered.
    await tx.query(sql.unsafe`
      insert into superseded_jobs (job_id)
      select id from graphile_worker._private_jobs where key = ${spec.jobKey} and locked_at is not null
      on conflict do nothing
    `);
  }
  await tx.query(sql.unsafe`
    select graphile_worker.add_job(
      identifier => ${identifier},
      payload => ${sql.json((payload ?? {}) as never)},
      queue_name => ${spec.queueName ?? null},
      run_at => ${spec.runAt ? spec.runAt.toISOString() : null}::timestamptz,
      max_attempts => ${spec.maxAttempts ?? null}::int,
      job_key => ${spec.jobKey ?? null},
      priority => ${spec.priority ?? null}::int
    )
  `);
}

/**
 * The enqueue of `addJob` above as ONE plain-text statement, for an application's own driver
 * (a pg client or pool, anything with `query(text, values)`): one statement is atomic on any
 * of them, even on a pool. The data-modifying CTE reads the same snapshot as add_job, so it
 * sees the running job with this key before add_job marks it. Parameters: identifier,
 * payload (json text), queue name, run at, max attempts, job key, priority.
 */
export const ADD_JOB_STATEMENT = `
  with superseded as (
    insert into superseded_jobs (job_id)
    select id from graphile_worker._private_jobs where key = $6::text and locked_at is not null
    on conflict do nothing
  )
  select graphile_worker.add_job(
    identifier => $1::text,
    payload => $2::json,
    queue_name => $3::text,
    run_at => $4::timestamptz,
    max_attempts => $5::int,
    job_key => $6::text,
    priority => $7::int
  ) is not null as added`;
