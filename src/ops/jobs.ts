import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";
import { readQueuedJobPayload } from "../runtime/graphileJobs.ts";

/**
 * Jobs, queued and finished, for `pgconverge jobs` and the dashboard: the queue from the
 * job_list view, the finished ones from job_history_list (sql/000003, sql/000004), so psql,
 * the CLI and the dashboard read the same rows.
 */

/** States of a queued job (job_list.state). */
export const QUEUE_STATES = ["pending", "scheduled", "retrying", "running", "exhausted"] as const;
/** Outcomes of a finished job (job_history.outcome). */
export const FINISHED_STATES = ["applied", "dead", "skipped"] as const;
export const JOB_STATES = [...QUEUE_STATES, ...FINISHED_STATES] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface JobSummary {
  jobId: string;
  task: string;
  state: JobState;
  attempts: number;
  /** Attempt limit; null for a finished job (the history does not keep it). */
  maxAttempts: number | null;
  enqueuedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  durationMs: number | null;
  lastError: string | null;
}

const time = z.coerce.date().nullable();
const JobRow = z.object({
  job_id: z.coerce.string(),
  task: z.string(),
  state: z.enum(JOB_STATES),
  attempts: z.number(),
  max_attempts: z.number().nullable(),
  enqueued_at: z.coerce.date(),
  started_at: time,
  finished_at: time,
  duration_ms: z.number().nullable(),
  last_error: z.string().nullable(),
});

function toSummary(row: z.infer<typeof JobRow>): JobSummary {
  return {
    jobId: row.job_id,
    task: row.task,
    state: row.state,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    enqueuedAt: row.enqueued_at.toISOString(),
    startedAt: row.started_at?.toISOString() ?? null,
    finishedAt: row.finished_at?.toISOString() ?? null,
    durationMs: row.duration_ms,
    lastError: row.last_error,
  };
}

export interface JobFilter {
  task?: string;
  state?: JobState;
  limit: number;
}

/**
 * Queued jobs (newest first), then finished ones (most recently finished first), up to
 * `limit` in all. Each side is read newest first through its index with its own limit, so
 * the cost does not grow with the size of the history.
 */
export async function listJobs(db: CommonQueryMethods, filter: JobFilter): Promise<JobSummary[]> {
  const { task, state, limit } = filter;
  const byTask = task === undefined ? sql.fragment`true` : sql.fragment`task = ${task}`;
  const queued = state === undefined || (QUEUE_STATES as readonly string[]).includes(state);
  const finished = state === undefined || (FINISHED_STATES as readonly string[]).includes(state);
  const rows: JobSummary[] = [];
  if (queued) {
    const found = await db.any(sql.type(JobRow)`
      select job_id, task, state, attempts, max_attempts, created_at as enqueued_at, locked_at as started_at,
             null::timestamptz as finished_at, null::float8 as duration_ms, last_error
      from job_list
      where ${byTask} and ${state === undefined ? sql.fragment`true` : sql.fragment`state = ${state}`}
      order by job_id desc
      limit ${limit}
    `);
    rows.push(...found.map(toSummary));
  }
  if (finished && rows.length < limit) {
    const found = await db.any(sql.type(JobRow)`
      select job_id, task, outcome as state, attempts, null::int as max_attempts, enqueued_at, started_at,
             finished_at, duration_ms, last_error
      from job_history_list
      where ${byTask} and ${state === undefined ? sql.fragment`true` : sql.fragment`outcome = ${state}`}
      order by finished_at desc
      limit ${limit - rows.length}
    `);
    rows.push(...found.map(toSummary));
  }
  return rows;
}

export interface HistoryRecord {
  revision: number;
  outcome: (typeof FINISHED_STATES)[number];
  attempts: number;
  enqueuedAt: string;
  startedAt: string | null;
  finishedAt: string;
  durationMs: number | null;
  lastError: string | null;
  result: unknown;
}

export interface JobDetail {
  jobId: string;
  task: string;
  /** The queue's row, while the job is queued. */
  queued: (JobSummary & { payload: unknown; runAt: string; queueName: string | null; jobKey: string | null }) | null;
  /** Its history rows (normally one; a job replaced through its key has one per revision). */
  history: HistoryRecord[];
  /** Its dead letters, with the payload (the only copy once the job has left the queue). */
  deadLetters: Array<{ id: string; reason: string; attempts: number; maxAttempts: number; lastError: string; deadAt: string; payload: unknown }>;
  /** Failed attempts of the job while it is queued (job_failures). */
  failures: { failures: number; firstFailedAt: string; lastFailedAt: string; lastError: string } | null;
}

const QueuedRow = JobRow.extend({ run_at: z.coerce.date(), queue_name: z.string().nullable(), job_key: z.string().nullable() });
const HistoryRow = z.object({
  revision: z.number(),
  outcome: z.enum(FINISHED_STATES),
  attempts: z.number(),
  task: z.string(),
  enqueued_at: z.coerce.date(),
  started_at: time,
  finished_at: z.coerce.date(),
  duration_ms: z.number().nullable(),
  last_error: z.string().nullable(),
  result: z.unknown(),
});
const DeadRow = z.object({
  id: z.coerce.string(),
  task: z.string(),
  reason: z.string(),
  attempts: z.number(),
  max_attempts: z.number(),
  last_error: z.string(),
  dead_at: z.coerce.date(),
  payload: z.unknown(),
});
const FailureRow = z.object({ failures: z.number(), first_failed_at: z.coerce.date(), last_failed_at: z.coerce.date(), last_error: z.string() });

/** Everything known about one job id, or null when nothing is (never existed, or its history was pruned). */
export async function showJob(db: CommonQueryMethods, jobId: string): Promise<JobDetail | null> {
  const queuedRow = await db.maybeOne(sql.type(QueuedRow)`
    select job_id, task, state, attempts, max_attempts, created_at as enqueued_at, locked_at as started_at,
           null::timestamptz as finished_at, null::float8 as duration_ms, last_error, run_at, queue_name, job_key
    from job_list where job_id = ${jobId}
  `);
  const history = await db.any(sql.type(HistoryRow)`
    select revision, outcome, attempts, task, enqueued_at, started_at, finished_at, duration_ms, last_error, result
    from job_history_list where job_id = ${jobId} order by finished_at
  `);
  const dead = await db.any(sql.type(DeadRow)`
    select id, task, reason, attempts, max_attempts, last_error, dead_at, payload
    from dead_letter_list where job_id = ${jobId} order by dead_at
  `);
  const failure = await db.maybeOne(sql.type(FailureRow)`
    select failures, first_failed_at, last_failed_at, last_error from job_failures where job_id = ${jobId}
    order by revision desc limit 1
  `);
  const task = queuedRow?.task ?? history[0]?.task ?? dead[0]?.task;
  if (task === undefined) return null;
  const payload = queuedRow ? await readQueuedJobPayload(db, jobId) : undefined;
  return {
    jobId,
    task,
    queued: queuedRow
      ? {
          ...toSummary(queuedRow),
          payload: payload?.payload ?? null,
          runAt: queuedRow.run_at.toISOString(),
          queueName: queuedRow.queue_name,
          jobKey: queuedRow.job_key,
        }
      : null,
    history: history.map((row) => ({
      revision: row.revision,
      outcome: row.outcome,
      attempts: row.attempts,
      enqueuedAt: row.enqueued_at.toISOString(),
      startedAt: row.started_at?.toISOString() ?? null,
      finishedAt: row.finished_at.toISOString(),
      durationMs: row.duration_ms,
      lastError: row.last_error,
      result: row.result,
    })),
    deadLetters: dead.map((row) => ({
      id: row.id,
      reason: row.reason,
      attempts: row.attempts,
      maxAttempts: row.max_attempts,
      lastError: row.last_error,
      deadAt: row.dead_at.toISOString(),
      payload: row.payload,
    })),
    failures: failure
      ? {
          failures: failure.failures,
          firstFailedAt: failure.first_failed_at.toISOString(),
          lastFailedAt: failure.last_failed_at.toISOString(),
          lastError: failure.last_error,
        }
      : null,
  };
}
