import type { Job } from "graphile-worker";
import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";

/**
 * Every statement of pgconverge that reads or writes graphile-worker's private tables
 * (`graphile_worker._private_*`), in one module: they are not graphile-worker's public API and
 * may change with its schema, so this is the one place to review when it does.
 * `test/runtime/graphileJobs.test.ts` pins graphile-worker's schema version and the columns used
 * here, and fails when an installed graphile-worker changes them. Everything else goes through
 * its public SQL API (`add_job`, `complete_jobs`, `force_unlock_workers`, the `jobs` view).
 */

/** A held job's claim: whether its applied-record is new, and the finished_at of its history row. */
export interface Claim {
  claimed: boolean;
  finishedAt: string;
}

/**
 * The start of a group-commit transaction, in one statement: sets the apply statement
 * timeout, row-locks the jobs this process still holds (same lock holder, same revision; in
 * id order, so two batches never wait on each other in a cycle), writes their
 * applied-records and their job_history rows (applied, or skipped when the record existed).
 * The history is written here rather than after the applies because a statement more per
 * transaction is a round trip more per commit, which a queue of one-row jobs pays in full;
 * a result that apply returns is added by setHistoryResults (only then a statement more). Returns, per held job, its claim: a held job whose
 * record already existed was applied before, and a job missing from the answer was taken over.
 * No CTE is joined to another: the planner estimates one row for each, so such a join is a
 * nested loop rescanning a CTE per row, quadratic in the batch (under EXPLAIN ANALYZE, execution took
 * 6.7 ms for 128 jobs and 145 ms for 1,000 that way, 2.7 and 17 ms this way). The history reads
 * the new records' ids once, as an array, and the answer is the history's own RETURNING.
 */
export async function claimBatch(tx: CommonQueryMethods, jobs: readonly Job[], applyTimeoutMs: number): Promise<Map<string, Claim>> {
  const mine = jobs.filter((job) => job.locked_by !== null);
  if (mine.length === 0) return new Map();
  const rows = await tx.any(sql.type(z.object({ id: z.coerce.string(), claimed: z.boolean(), finished_at: z.string() }))`
    with mine (id, revision, locked_by, task, attempts, locked_at_ms) as (
      select * from ${sql.unnest(
        mine.map((job) => [job.id, job.revision, job.locked_by!, job.task_identifier, job.attempts, job.locked_at === null ? null : new Date(job.locked_at).getTime()]),
        ["int8", "int4", "text", "text", "int4", "float8"],
      )}
    ), held as (
      -- created_at is the row's (graphile-worker never changes it). attempts and locked_at are
      -- the fetch's: an add_job replacing a running job sets its attempts to max_attempts, and
      -- the heartbeat moves its locked_at. locked_at goes as epoch milliseconds: a number is
      -- cheaper to print and to read back than a timestamp.
      select jobs.id, mine.revision, mine.task, mine.attempts, jobs.created_at, to_timestamp(mine.locked_at_ms / 1000) as locked_at
      from graphile_worker._private_jobs as jobs
      join mine on jobs.id = mine.id and jobs.revision = mine.revision and jobs.locked_by = mine.locked_by
      order by jobs.id
      for update of jobs
    ), claimed as (
      insert into job_ledger (job_id, revision, task, outcome)
      select id, revision, task, 'applied' from held order by id
      on conflict do nothing
      returning job_id
    ), history as (
      -- An array, not "in (select ...)": that is a subplan rescanning the CTE for each row.
      insert into job_history (job_id, revision, task, outcome, attempts, enqueued_at, started_at)
      select held.id, held.revision, held.task,
             case when held.id = any (array(select job_id from claimed)) then 'applied' else 'skipped' end,
             held.attempts, held.created_at, held.locked_at
      from held
      returning job_id, outcome, finished_at
    )
    select job_id as id, outcome = 'applied' as claimed, finished_at::text,
           set_config('statement_timeout', ${String(applyTimeoutMs)}, true)
    from history
  `);
  return new Map(rows.map((row) => [row.id, { claimed: row.claimed, finishedAt: row.finished_at }]));
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

/**
 * Records, in the caller's transaction, the running job with this key that `add_job` is about
 * to mark exhausted (it replaces a locked job by marking it), so the sweeper completes it
 * rather than dead-lettering it. The job with the key is row-locked until the caller commits:
 * a worker taking it between this read and add_job's would be marked exhausted with no record
 * (and dead-lettered after its next transient failure); a worker's fetch skips it instead.
 */
export async function recordSuperseded(tx: CommonQueryMethods, jobKey: string): Promise<void> {
  await tx.query(sql.unsafe`
    with keyed as (
      select id, locked_at from graphile_worker._private_jobs where key = ${jobKey} for update
    )
    insert into superseded_jobs (job_id)
    select id from keyed where locked_at is not null
    on conflict do nothing
  `);
}

/**
 * The enqueue of `addJob` above as ONE plain-text statement, for an application's own driver
 * (a pg client or pool, anything with `query(text, values)`): one statement is atomic on any
 * of them, even on a pool. The supersession record is written before add_job runs, and row-locks
 * the running job with this key so that no worker takes it in between (see recordSuperseded).
 * "Before" is the WHERE's sub-select: Postgres runs a data-modifying CTE that the main query does
 * not read only after the main query, and by then add_job has taken the job's key, so the CTE
 * would find no job (a test replaces a running job through this statement). Parameters:
 * identifier, payload (json text), queue name, run at, max attempts, job key, priority, job key mode.
 */
export const ADD_JOB_STATEMENT = `
  with keyed as (
    select id, locked_at from graphile_worker._private_jobs where key = $6::text for update
  ), superseded as (
    insert into superseded_jobs (job_id)
    select id from keyed where locked_at is not null
    on conflict do nothing
    returning job_id
  )
  select graphile_worker.add_job(
    identifier => $1::text,
    payload => $2::json,
    queue_name => $3::text,
    run_at => $4::timestamptz,
    max_attempts => $5::int,
    job_key => $6::text,
    priority => $7::int,
    job_key_mode => coalesce($8::text, 'replace')
  ) is not null as added
  where (select count(*) from superseded) >= 0`;

/**
 * Many jobs of one task in ONE statement (addJobs), with the result of as many add_job calls in
 * the order given, at the cost of a few: the jobs come in segments (distinct job keys, one job
 * key mode each; the caller cuts them), and each segment is one add_jobs call, which is what
 * add_job runs for a single job. Parameters are arrays, one element per job: payloads (json
 * text), queue names, run ats, max attempts, job keys, priorities, whether the job key mode is
 * preserve_run_at, segment numbers (ascending); then the identifier. Returns how many were added.
 * The supersession records are written first, as in ADD_JOB_STATEMENT (the WHERE's sub-select).
 */
export const ADD_JOBS_STATEMENT = `
  with spec as (
    select * from unnest($1::json[], $2::text[], $3::timestamptz[], $4::int[], $5::text[], $6::int[], $7::bool[], $8::int[])
      with ordinality as spec (payload, queue_name, run_at, max_attempts, job_key, priority, preserve_run_at, segment, n)
  ), keyed as (
    -- Row-locked in id order (see recordSuperseded): two batches never wait on each other in a cycle.
    select id, locked_at from graphile_worker._private_jobs
    where key in (select job_key from spec where job_key is not null)
    order by id
    for update
  ), superseded as (
    insert into superseded_jobs (job_id)
    select id from keyed where locked_at is not null
    on conflict do nothing
    returning job_id
  ), segment as (
    select segment, bool_and(preserve_run_at) as preserve_run_at,
           array_agg(row($9::text, payload, queue_name, run_at, max_attempts, job_key, priority, null)::graphile_worker.job_spec order by n) as specs
    from spec group by segment
  )
  select coalesce(sum((select count(*) from graphile_worker.add_jobs(segment.specs, segment.preserve_run_at))), 0)::int as added
  from (select * from segment order by segment) as segment
  where (select count(*) from superseded) >= 0`;

/**
 * Re-stamps `locked_at` of the jobs these lock holders still hold, when older than `olderThan`
 * (an interval), so graphile-worker's 4-hour lock expiry never takes a live worker's slow job.
 * The new stamp lies half of `olderThan` in the past, not at now(): a lock taken now means a
 * new run to the outcome retry's guard (RERUN_GUARD_STATEMENT), which would then skip recording
 * the failure of the run still holding it, and the job would stay locked, unrun, while its
 * worker lives.
 */
export async function refreshJobLocks(db: CommonQueryMethods, lockers: readonly string[], olderThan: string): Promise<void> {
  await db.query(sql.unsafe`
    update graphile_worker._private_jobs set locked_at = now() - ${olderThan}::interval / 2
    where locked_by = any(${sql.array([...lockers], "text")})
      and locked_at < now() - ${olderThan}::interval
  `);
}

const LockedJob = z.object({ id: z.coerce.string(), locked_at: z.string() });

/**
 * The jobs locked under these lock holders, with their lock times as epoch microseconds (a
 * timestamp's text depends on the session's DateStyle and TimeZone, and may not read back as
 * the same instant). No index serves locked_by: a scan of the table, run once a minute (LostJobs).
 */
export async function jobsLockedBy(db: CommonQueryMethods, lockers: readonly string[]): Promise<Array<{ id: string; lockedAt: string }>> {
  const rows = await db.any(sql.type(LockedJob)`
    select id, (extract(epoch from locked_at) * 1000000)::int8::text as locked_at from graphile_worker._private_jobs
    where locked_by = any(${sql.array([...lockers], "text")})
  `);
  return rows.map((row) => ({ id: row.id, lockedAt: row.locked_at }));
}

/**
 * Which of these jobs are still locked under these lock holders: LostJobs asks about the jobs it
 * has seen end, thousands at a time, to forget those whose outcome is recorded. One primary-key
 * probe per id whatever the statistics say ("offset 0" keeps the planner from turning the
 * probes into a scan of the table: with "id = any(...)" it scanned every row, analysed or not,
 * and the liveness backend took 3.3% of the machine's CPU in a 120,000-job bench, 1.9% after).
 */
export async function jobsStillLockedBy(db: CommonQueryMethods, lockers: readonly string[], jobIds: readonly string[]): Promise<Set<string>> {
  if (jobIds.length === 0) return new Set();
  return new Set(await db.anyFirst(jobsStillLockedByStatement(lockers, jobIds)));
}

export function jobsStillLockedByStatement(lockers: readonly string[], jobIds: readonly string[]) {
  return sql.type(z.object({ id: z.coerce.string() }))`
    select jobs.id from unnest(${sql.array([...jobIds], "int8")}) as ended (id),
      lateral (select id, locked_by from graphile_worker._private_jobs where id = ended.id offset 0) as jobs
    where jobs.locked_by = any(${sql.array([...lockers], "text")})
  `;
}

/**
 * Releases these jobs as graphile-worker returns unrun jobs from its local queue (lock cleared,
 * the attempt the fetch counted given back, their named queue unlocked), each only if it is
 * still locked by one of these holders at the lock time given (jobsLockedBy's): locked again
 * since, it is not the lock that was lost. A job row locked by a transaction is skipped (an
 * enqueue replacing it, a claim): the next look sees it again. Notifies "jobs:insert" so that idle
 * workers fetch them at once. Returns how many were released.
 */
export async function releaseLostJobs(db: CommonQueryMethods, lockers: readonly string[], jobs: ReadonlyArray<{ id: string; lockedAt: string }>): Promise<number> {
  if (jobs.length === 0) return 0;
  const row = await db.one(sql.type(z.object({ released: z.number() }))`
    with lost as (
      select jobs.id from graphile_worker._private_jobs as jobs
      join unnest(${sql.array(jobs.map((job) => job.id), "int8")}, ${sql.array(jobs.map((job) => job.lockedAt), "int8")}) as seen (id, locked_at_us)
        on jobs.id = seen.id and (extract(epoch from jobs.locked_at) * 1000000)::int8 = seen.locked_at_us
      where jobs.locked_by = any(${sql.array([...lockers], "text")})
      order by jobs.id
      for update of jobs skip locked
    ), released as (
      update graphile_worker._private_jobs as jobs
      set locked_by = null, locked_at = null, attempts = greatest(attempts - 1, 0)
      from lost
      where jobs.id = lost.id
      returning jobs.id, jobs.job_queue_id
    ), unlocked_queues as (
      update graphile_worker._private_job_queues as queues set locked_by = null, locked_at = null
      where queues.id in (select job_queue_id from released) and queues.locked_by = any(${sql.array([...lockers], "text")})
    ), counted as (
      select count(*)::int as released from released
    )
    select released, pg_notify('jobs:insert', json_build_object('count', released)::text) from counted
  `);
  return row.released;
}

const ExhaustedJob = z.object({
  id: z.coerce.string(),
  revision: z.number(),
  applied: z.boolean(),
  superseded: z.boolean(),
});

/**
 * Locks (skipping locked ones) up to `limit` jobs graphile-worker gave up on: attempts used up
 * and not running. Each says whether its effects were applied (the ledger) or it was superseded.
 */
export function lockExhaustedJobs(tx: CommonQueryMethods, limit: number) {
  return tx.any(sql.type(ExhaustedJob)`
    select jobs.id, jobs.revision,
           exists (select 1 from job_ledger l where l.job_id = jobs.id and l.revision = jobs.revision) as applied,
           exists (select 1 from superseded_jobs s where s.job_id = jobs.id) as superseded
    from graphile_worker._private_jobs as jobs
    where jobs.attempts >= jobs.max_attempts and jobs.locked_at is null
    order by jobs.id
    limit ${limit}
    for update of jobs skip locked
  `);
}

/**
 * Moves these exhausted jobs to dead_letters, with their payload, queue and last error, and
 * records them as dead in the ledger and in job_history (one of the three writers of history,
 * listed with their reasons in sql/000006: this one needs the job's enqueue time from the
 * private table, and no worker is running it, so started_at is unknown).
 */
export async function deadLetterExhaustedJobs(tx: CommonQueryMethods, jobIds: readonly string[]): Promise<void> {
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
      where jobs.id = any(${sql.array([...jobIds], "int8")})
      on conflict (job_id, revision) do nothing
      returning job_id, revision, task, attempts, last_error
    ), history as (
      insert into job_history (job_id, revision, task, outcome, attempts, enqueued_at, started_at, last_error)
      select moved.job_id, moved.revision, moved.task, 'dead', moved.attempts, jobs.created_at, null, moved.last_error
      from moved join graphile_worker._private_jobs as jobs on jobs.id = moved.job_id
    )
    insert into job_ledger (job_id, revision, task, outcome)
    select job_id, revision, task, 'dead' from moved
    on conflict do nothing
  `);
}

/** Deletes up to `limit` ledger, failure and supersession records each of jobs that have left the queue; returns how many. */
export async function pruneRecordsOfFinishedJobs(pool: CommonQueryMethods, limit: number): Promise<number> {
  const ledger = await pool.query(sql.unsafe`
    delete from job_ledger
    where (job_id, revision) in (
      select l.job_id, l.revision from job_ledger l
      where not exists (select 1 from graphile_worker._private_jobs j where j.id = l.job_id)
      limit ${limit}
    )
  `);
  const failures = await pool.query(sql.unsafe`
    delete from job_failures
    where (job_id, revision) in (
      select f.job_id, f.revision from job_failures f
      where not exists (select 1 from graphile_worker._private_jobs j where j.id = f.job_id)
      limit ${limit}
    )
  `);
  const superseded = await pool.query(sql.unsafe`
    delete from superseded_jobs
    where job_id in (
      select s.job_id from superseded_jobs s
      where not exists (select 1 from graphile_worker._private_jobs j where j.id = s.job_id)
      limit ${limit}
    )
  `);
  return ledger.rowCount + failures.rowCount + superseded.rowCount;
}

/** The payload of a job still in the queue (graphile-worker's public jobs view leaves it out); undefined when the job is not queued. */
export async function readQueuedJobPayload(db: CommonQueryMethods, jobId: string): Promise<{ payload: unknown } | undefined> {
  const row = await db.maybeOne(sql.type(z.object({ payload: z.unknown() }))`
    select payload from graphile_worker._private_jobs where id = ${jobId}
  `);
  return row === null ? undefined : { payload: row.payload };
}

/** How soon a parked job may run again at the earliest, ms (see parkJob). */
export const MIN_PARK_MS = 1_000;

/**
 * Gives a job this execution holds back to the queue, to run again at `runAt`, WITHOUT counting
 * the attempt (graphile-worker counted it when it fetched the job): what flow control does with
 * a job that may not run yet because its limit is full or its service is throttled or down.
 * Unlocks the job's named queue too, as a failure would. Returns false, changing nothing, when
 * the job is no longer held by this execution (released and taken over).
 *
 * The job becomes due MIN_PARK_MS from now at the earliest: the executor then hands
 * graphile-worker an error, and graphile-worker records that failed run (failJob) without
 * awaiting it, matching the job by its lock holder only, which is the same for every run of a
 * worker process; had the same process fetched the job again before that statement ran, the
 * new run would be unlocked under it (still not applied twice: its commit would find the lock
 * gone, but it would be run again for nothing).
 */
export async function parkJob(db: CommonQueryMethods, job: Job, runAt: Date): Promise<boolean> {
  if (job.locked_by === null) return false;
  const row = await db.maybeOne(sql.type(z.object({ id: z.coerce.string() }))`
    with parked as (
      update graphile_worker._private_jobs
      set attempts = greatest(attempts - 1, 0), locked_by = null, locked_at = null,
          run_at = greatest(${runAt.toISOString()}::timestamptz, now() + ${MIN_PARK_MS} * interval '1 millisecond')
      where id = ${job.id} and revision = ${job.revision} and locked_by = ${job.locked_by}
      returning id, job_queue_id
    ), unlocked_queue as (
      update graphile_worker._private_job_queues as queues set locked_by = null, locked_at = null
      from parked
      where queues.id = parked.job_queue_id and queues.locked_by = ${job.locked_by}
    )
    select id from parked
  `);
  return row !== null;
}

/**
 * Makes parked jobs runnable: the n-th (in the order given) at now + (n-1) × spacingMs, so a
 * crowd of waiters released at once does not hit a service in one burst. Only jobs that are
 * still waiting (not locked, due later) move. Notifies graphile-worker's "jobs:insert" channel,
 * as an insert does, so idle workers fetch at once instead of at their next poll. Returns how
 * many jobs moved.
 */
export async function wakeJobs(db: CommonQueryMethods, jobIds: readonly string[], spacingMs = 0): Promise<number> {
  if (jobIds.length === 0) return 0;
  // Rows locked in id order first (in the caller's transaction): two wakes of overlapping jobs
  // (a job waiting on two limits, freed by two releases) would otherwise deadlock.
  await db.query(sql.unsafe`
    select id from graphile_worker._private_jobs where id = any(${sql.array([...jobIds], "int8")}) order by id for update
  `);
  const row = await db.one(sql.type(z.object({ woken: z.number() }))`
    with woken as (
      update graphile_worker._private_jobs as jobs
      set run_at = now() + (waiting.n - 1) * ${spacingMs} * interval '1 millisecond'
      from unnest(${sql.array([...jobIds], "int8")}) with ordinality as waiting (id, n)
      where jobs.id = waiting.id and jobs.locked_by is null and jobs.run_at > now()
      returning jobs.id
    ), counted as (
      select count(*)::int as woken from woken
    )
    select woken, pg_notify('jobs:insert', json_build_object('count', woken)::text) from counted
  `);
  return row.woken;
}

/**
 * graphile-worker's outcome statements (0.18, sql/completeJobs and sql/failJobs): the delete of
 * completed jobs and the update that records a failure, recognised by their text so that
 * src/db/outcomeRetry.ts can run them again on a fresh connection. A completed job is deleted
 * by id, and ids are never reused, so the delete may simply run twice. A failure is NOT safe to
 * run twice as it is: it matches jobs by lock holder only, and if its first run committed
 * (the reply lost with the connection), the same pool may have fetched the job again once it
 * was due (a failed attempt: e^1 s at the earliest; a parked one: MIN_PARK_MS), and a late
 * re-run would unlock that newer run while it runs. See outcomeJobIds and RERUN_GUARD_STATEMENT.
 */
const OUTCOME_STATEMENT = /^(?:with j as \(\s*)?(?:delete from \S+\._private_jobs\b|update \S+\._private_jobs as jobs\s+set\s+last_error\b)/;

/** Whether this statement text is one of graphile-worker's outcome statements (see OUTCOME_STATEMENT). */
export function isOutcomeStatement(text: string): boolean {
  return OUTCOME_STATEMENT.test(text);
}

/** batchFailJobs (one statement per job, with and without a named queue): $2 is a JSON array of {jobId, message, payload}. */
const FAIL_JOB_STATEMENT = /^(?:with j as \(\s*)?update \S+\._private_jobs as jobs\s+set\s+last_error = \(el->>'message'\)/;
/** failJobs (the jobs a pool releases when it stops): $1 is the job ids, a bigint[]. */
const FAIL_JOBS_STATEMENT = /^with j as \(\s*update \S+\._private_jobs as jobs\s+set\s+last_error = \$2::text/;

/**
 * The jobs whose lock a re-run of this outcome statement would clear, from the statement's
 * values; undefined for a statement that may run again as it is (completeJobs' deletes). Throws
 * for a failure statement of a shape not known here (a graphile-worker upgrade): a re-run that
 * cannot be guarded must not run.
 */
export function outcomeJobIds(text: string, values: readonly unknown[] | undefined): string[] | undefined {
  if (FAIL_JOB_STATEMENT.test(text)) {
    const specs = typeof values?.[1] === "string" ? (JSON.parse(values[1]) as unknown) : undefined;
    if (Array.isArray(specs)) return specs.map((spec) => String((spec as { jobId: unknown }).jobId));
  } else if (FAIL_JOBS_STATEMENT.test(text)) {
    if (Array.isArray(values?.[0])) return values[0].map(String);
  } else if (isOutcomeStatement(text) && !/^(?:with j as \(\s*)?delete\b/.test(text)) {
    throw new Error("an outcome statement of graphile-worker not known to pgconverge: it cannot be run again safely");
  } else {
    return undefined;
  }
  throw new Error("graphile-worker's failure statement came without the job ids pgconverge expects in its values");
}

/**
 * The guard of a failure statement's re-run, at the start of the re-run's transaction: locks the
 * statement's jobs (in id order, as wakeJobs does) until the statement has run, and says whether
 * any of them was locked after the statement was first sent. That can only be a newer run (the
 * first run committed, then the job was fetched again) or a takeover (the sweeper released a
 * dead worker's job): either way the re-run must not touch it. A failure statement is one
 * atomic statement, so if it committed for one job it committed for all, and the whole re-run
 * is skipped. Parameters: the job ids (bigint[]); the milliseconds since the statement was first
 * sent, measured by the caller on a monotonic clock just before sending this.
 *
 * Only the database's clock is compared with locked_at (the Node process's may be off), and
 * the instant that pairs with the caller's measurement is when the server received this
 * statement: statement_timestamp(). Not clock_timestamp(): this statement may wait for the row
 * locks (a group commit of the newer run holds them for its whole transaction), and the clock
 * read after that wait would place "first sent" later by the wait, past a newer lock. The rows
 * are compared once locked, in their newest version (the locking clause re-reads a row changed
 * while it waited). The bound is off by the difference between the two statements' one-way
 * latencies, which decides nothing: the lock of the run the statement was sent for was taken
 * before that run began, a round trip at least before the send, and a newer one after the
 * first run committed (a failed attempt is due e^1 s later at the earliest).
 *
 * A lock re-stamped by refreshJobLocks (a job running for over half an hour) keeps a stamp
 * minutes in the past, so it is never taken for a newer run.
 */
export const RERUN_GUARD_STATEMENT = `
  with locked as (
    select id, locked_at from graphile_worker._private_jobs
    where id = any($1::bigint[])
    order by id
    for update
  )
  select coalesce(bool_or(locked_at > statement_timestamp() - $2::float8 * interval '1 millisecond'), false) as relocked
  from locked`;
