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
