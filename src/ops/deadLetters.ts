import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";

/**
 * Operating on dead letters: list, retry, discard. One statement per function; retry and
 * discard delete the dead letter with DELETE ... RETURNING, so when two of them race for the
 * same row, the second blocks on its row lock and then finds it gone: a dead letter is
 * re-enqueued or discarded exactly once, never both, never twice.
 */

export interface DeadLetter {
  id: string;
  task: string;
  reason: "permanent" | "exhausted";
  attempts: number;
  maxAttempts: number;
  lastError: string;
  deadAt: string;
  deadForSeconds: number;
  queueName: string | null;
  jobId: string;
  payload: unknown;
}

const DeadLetterRow = z.object({
  id: z.coerce.string(),
  task: z.string(),
  reason: z.enum(["permanent", "exhausted"]),
  attempts: z.number(),
  max_attempts: z.number(),
  last_error: z.string(),
  dead_at: z.coerce.date(),
  dead_for_s: z.number(),
  queue_name: z.string().nullable(),
  job_id: z.coerce.string(),
  payload: z.unknown(),
});

/** Dead letters from the dead_letter_list view, newest first, optionally of one task. */
export async function listDeadLetters(db: CommonQueryMethods, options: { task?: string; limit: number }): Promise<DeadLetter[]> {
  const rows = await db.any(sql.type(DeadLetterRow)`
    select id, task, reason, attempts, max_attempts, last_error, dead_at, dead_for_s, queue_name, job_id, payload
    from dead_letter_list
    ${options.task === undefined ? sql.fragment`` : sql.fragment`where task = ${options.task}`}
    order by dead_at desc, id desc
    limit ${options.limit}
  `);
  return rows.map((row) => ({
    id: row.id,
    task: row.task,
    reason: row.reason,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    lastError: row.last_error,
    deadAt: row.dead_at.toISOString(),
    deadForSeconds: row.dead_for_s,
    queueName: row.queue_name,
    jobId: row.job_id,
    payload: row.payload,
  }));
}

/** Which dead letters to act on: these ids, or all of them (optionally of one task). */
export type DeadLetterSelection = { ids: readonly string[] } | { all: true; task?: string };

export interface RetriedDeadLetter {
  deadLetterId: string;
  /** The new job: add_job gives it a new id, so the job ledger does not take it for the applied or dead old one. */
  jobId: string;
  task: string;
}

const Retried = z.object({ dead_letter_id: z.coerce.string(), job_id: z.coerce.string(), task: z.string() });

function where(selection: DeadLetterSelection) {
  if ("ids" in selection) return sql.fragment`id = any(${sql.array([...selection.ids], "int8")})`;
  return selection.task === undefined ? sql.fragment`true` : sql.fragment`task = ${selection.task}`;
}

/**
 * Re-enqueues dead letters as new jobs with the original task, payload and queue, fresh
 * attempts and the same max_attempts, removing them in the same statement (one transaction:
 * a job is never both queued and dead, and never lost between the two).
 */
export async function retryDeadLetters(db: CommonQueryMethods, selection: DeadLetterSelection): Promise<RetriedDeadLetter[]> {
  const rows = await db.any(sql.type(Retried)`
    with taken as (
      delete from dead_letters
      where ${where(selection)}
      returning id, task, queue_name, payload, max_attempts
    )
    select taken.id as dead_letter_id, job.id as job_id, taken.task
    from taken
    cross join lateral graphile_worker.add_job(
      identifier => taken.task,
      payload => taken.payload::json,
      queue_name => taken.queue_name,
      max_attempts => taken.max_attempts
    ) as job
    order by taken.id
  `);
  return rows.map((row) => ({ deadLetterId: row.dead_letter_id, jobId: row.job_id, task: row.task }));
}

/** Deletes dead letters for good; returns the ids it removed. */
export async function discardDeadLetters(db: CommonQueryMethods, ids: readonly string[]): Promise<string[]> {
  const rows = await db.anyFirst(sql.type(z.object({ id: z.coerce.string() }))`
    with discarded as (delete from dead_letters where id = any(${sql.array([...ids], "int8")}) returning id)
    select id from discarded order by id
  `);
  return [...rows];
}
