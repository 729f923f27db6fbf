// graphile-worker's failure statements, run again on a fresh connection after their first run
// lost its connection (src/db/outcomeRetry.ts), must never touch a newer run of the job: they
// match rows by the pool's lock holder only, which the same pool's next run of the job shares.
// The statements are graphile-worker's own (its batchFailJobs and failJobs, called here as its
// worker calls them), and the connection is lost the way a failover loses it.
import pg from "pg";
import t from "tap";
import { refreshJobLocks } from "../../src/runtime/graphileJobs.ts";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db.ts";

const POOL_ID = "pool-under-test";
const MESSAGE = "the attempt failed";

// graphile-worker's package exports only its entry point; its statements live in this module.
const graphileSql = (await import(new URL("../../node_modules/graphile-worker/dist/sql/failJobs.js", import.meta.url).href)) as {
  batchFailJobs(options: unknown, withPgClient: unknown, poolId: string, specs: unknown[]): Promise<void>;
  failJobs(options: unknown, withPgClient: unknown, poolId: string, jobs: unknown[], message: string): Promise<unknown[]>;
};

const OPTIONS = {
  escapedWorkerSchema: '"graphile_worker"',
  workerSchema: "graphile_worker",
  resolvedPreset: { worker: { preparedStatements: true } },
};

/** graphile-worker's withPgClient over the test database's queue pool (the one outcomeRetry covers). */
function withPgClient(pool: pg.Pool) {
  const run = async <T>(callback: (client: pg.PoolClient) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
    try {
      return await callback(client);
    } finally {
      client.release(true);
    }
  };
  return Object.assign(run, { withRetries: run });
}

interface Job {
  id: string;
  job_queue_id: number | null;
}

/** A job of a named queue or none, locked (job and queue) by POOL_ID: a run in progress. */
async function lockedJob(db: TestDatabase, queue: string | null): Promise<Job> {
  const [job] = await db.query<Job>(
    "select id::text, job_queue_id from graphile_worker.add_job('outcome_test', '{}'::json, queue_name => $1::text)",
    [queue],
  );
  await db.query("update graphile_worker._private_jobs set locked_by = $2, locked_at = clock_timestamp(), attempts = 1 where id = $1", [job!.id, POOL_ID]);
  await db.query("update graphile_worker._private_job_queues set locked_by = $2, locked_at = clock_timestamp() where id = $1", [job!.job_queue_id, POOL_ID]);
  return job!;
}

const FORMS = [
  {
    name: "batchFailJobs, a job without a queue",
    queue: null,
    fail: (pool: pg.Pool, job: Job) => graphileSql.batchFailJobs(OPTIONS, withPgClient(pool), POOL_ID, [{ job, message: MESSAGE }]),
  },
  {
    name: "batchFailJobs, a job of a named queue",
    queue: "outcome-queue",
    fail: (pool: pg.Pool, job: Job) => graphileSql.batchFailJobs(OPTIONS, withPgClient(pool), POOL_ID, [{ job, message: MESSAGE }]),
  },
  {
    name: "failJobs (jobs released at shutdown)",
    queue: "outcome-queue",
    fail: (pool: pg.Pool, job: Job) => graphileSql.failJobs(OPTIONS, withPgClient(pool), POOL_ID, [job], MESSAGE),
  },
];

/**
 * Sends the failure statement for `job` while another session holds the job's row, so the
 * statement waits; runs `meanwhile` in that session, terminates the statement's backend, and
 * ends the session (commits). Returns what graphile-worker got from the statement.
 */
async function failWithLostConnection(
  db: TestDatabase,
  fail: (pool: pg.Pool, job: Job) => Promise<unknown>,
  job: Job,
  meanwhile: (holder: pg.Client) => Promise<unknown>,
): Promise<unknown> {
  const holder = new pg.Client({ connectionString: db.url });
  await holder.connect();
  try {
    await holder.query("begin");
    await holder.query("select 1 from graphile_worker._private_jobs where id = $1 for update", [job.id]);
    const outcome = fail(db.pool, job);
    outcome.catch(() => {});
    const pid = await waitFor("the failure statement to wait for the job's row", async () => {
      const [row] = await db.query<{ pid: number }>(
        "select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like '%last_error%'",
      );
      return row?.pid;
    });
    await meanwhile(holder);
    await db.query("select pg_terminate_backend($1)", [pid]);
    await waitFor("its backend to end", async () => (await db.query("select 1 from pg_stat_activity where pid = $1", [pid])).length === 0);
    await holder.query("commit");
    return await outcome;
  } finally {
    await holder.end();
  }
}

const jobRow = (db: TestDatabase, job: Job) =>
  db.query<{ locked_by: string | null; locked_at: string | null; last_error: string | null; queue_locked_by: string | null }>(
    `select jobs.locked_by, jobs.locked_at::text, jobs.last_error, queues.locked_by as queue_locked_by
     from graphile_worker._private_jobs as jobs left join graphile_worker._private_job_queues as queues on queues.id = jobs.job_queue_id
     where jobs.id = $1`,
    [job.id],
  );

for (const form of FORMS) {
  t.test(`${form.name}: a re-run leaves alone a newer run of the job by the same pool`, async (t) => {
    const db = await createTestDatabase(t, { pipeline: false });
    const job = await lockedJob(db, form.queue);
    let newer: string | undefined;
    const result = await failWithLostConnection(db, form.fail, job, async (holder) => {
      // What the job looks like once the first run had committed (its reply lost with the
      // connection) and the same pool fetched the job again: locked by the same holder, later.
      const { rows } = await holder.query<{ locked_at: string }>(
        "update graphile_worker._private_jobs set last_error = 'an earlier attempt', locked_at = clock_timestamp(), attempts = attempts + 1 where id = $1 returning locked_at::text",
        [job.id],
      );
      newer = rows[0]!.locked_at;
    });
    t.same(await jobRow(db, job), [
      { locked_by: POOL_ID, locked_at: newer, last_error: "an earlier attempt", queue_locked_by: form.queue === null ? null : POOL_ID },
    ]);
    if (Array.isArray(result)) t.same(result, [], "failJobs reports no job failed");
  });

  t.test(`${form.name}: a re-run still records the failure of the run it was sent for`, async (t) => {
    const db = await createTestDatabase(t, { pipeline: false });
    const job = await lockedJob(db, form.queue);
    const result = await failWithLostConnection(db, form.fail, job, async () => {});
    const rows = await jobRow(db, job);
    t.same(rows, [{ locked_by: null, locked_at: null, last_error: MESSAGE, queue_locked_by: null }]);
    if (Array.isArray(result)) t.same(result.map((row: { id: string }) => String(row.id)), [job.id], "failJobs reports the job failed");
  });
}

t.test("a lock the heartbeat re-stamps is still the run a failure was sent for", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const job = await lockedJob(db, null);
  // A run holding its job for 40 minutes: the heartbeat refreshes locks older than 30.
  await db.query("update graphile_worker._private_jobs set locked_at = now() - interval '40 minutes' where id = $1", [job.id]);
  await refreshJobLocks(db.appPool, [POOL_ID], "30 minutes");
  const [stamp] = await db.query<{ minutes_ago: number }>(
    "select extract(epoch from now() - locked_at)::float8 / 60 as minutes_ago from graphile_worker._private_jobs where id = $1",
    [job.id],
  );
  // Minutes back: older than the first send of any failure still being retried (about 30 s of
  // retries), so the guard never takes the refreshed lock for a newer run; and far from expiry.
  t.ok(stamp!.minutes_ago > 10 && stamp!.minutes_ago < 20, `re-stamped ${stamp!.minutes_ago.toFixed(1)} minutes back`);
});
