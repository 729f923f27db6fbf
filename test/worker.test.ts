// Graceful shutdown: stop claiming, let in-flight jobs finish within the deadline, release the rest, exit 0.
import t from "tap";
import { createTestDatabase, waitFor } from "./helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, queuedJobs } from "./helpers/fixtures.ts";
import { spawnWorker, waitForRegistration } from "./helpers/worker.ts";

t.test("SIGTERM lets an in-flight job finish, then deregisters and exits 0", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const worker = spawnWorker(t, db, { SHUTDOWN_TIMEOUT_MS: "10000", LOG_LEVEL: "info" });
  await waitForRegistration(db, worker.child.pid!);
  await addJobs(db, "effect", [{ n: 1, prepareMs: 1_500 }]);
  await waitFor("the job to start", async () => (await db.query("select 1 from graphile_worker.jobs where locked_by is not null")).length > 0);
  worker.child.kill("SIGTERM");
  await waitFor("the worker to begin shutting down", async () => worker.output().includes("shutting down"));
  await addJobs(db, "effect", [{ n: 2 }]);
  const exit = await worker.exited;
  t.equal(exit.code, 0, worker.output());
  t.same(await db.query("select n from test_effects"), [{ n: 1 }], "the in-flight job finished; the new one was not claimed");
  t.equal(await queuedJobs(db), 1);
  t.same(await db.query("select * from workers"), [], "deregistered");
});

t.test("a job that outlives the shutdown deadline is aborted and released for another worker", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const worker = spawnWorker(t, db, { SHUTDOWN_TIMEOUT_MS: "500" });
  await waitForRegistration(db, worker.child.pid!);
  await addJobs(db, "effect", [{ n: 1, prepareMs: 60_000, ignoreAbort: true }]);
  await waitFor("the job to start", async () => (await db.query("select 1 from graphile_worker.jobs where locked_by is not null")).length > 0);
  worker.child.kill("SIGTERM");
  const exit = await worker.exited;
  t.equal(exit.code, 0, worker.output());
  const [job] = await db.query<{ locked_by: string | null; attempts: number; last_error: string }>(
    "select locked_by, attempts, last_error from graphile_worker.jobs",
  );
  t.equal(job?.locked_by, null, "released at once, not left for the sweeper");
  t.equal(job?.attempts, 1);
  t.same(await effectCounts(db), { rows: 0, distinct: 0 });
  t.equal((await db.query("select 1 from dead_letters")).length, 0, "a shutdown is not a failure of the job");
});

t.test("a stray promise rejection stops the worker in order: one log line, released jobs, exit 1", async (t) => {
  const db = await createTestDatabase(t);
  const worker = spawnWorker(t, db);
  await waitForRegistration(db, worker.child.pid!);
  // A job that will still be locked by this worker (due later, locked by hand) when it stops.
  await db.query(`select graphile_worker.add_job('effect', json_build_object('n', 1), run_at => now() + interval '1 hour')`);
  const [registration] = await db.query<{ locker_ids: string[] }>("select locker_ids from workers where pid = $1", [worker.child.pid]);
  await db.query("update graphile_worker._private_jobs set locked_by = $1, locked_at = now()", [registration!.locker_ids[0]]);
  await addJobs(db, "stray_rejection", [{}]);
  const exit = await worker.exited;
  t.equal(exit.code, 1, worker.output());
  const lines = worker.output().trim().split("\n");
  t.ok(lines.some((line) => /"msg":"unexpected failure outside any job; stopping"/.test(line) && /Connection terminated unexpectedly/.test(line)), "one log line says why");
  t.notOk(lines.some((line) => /^\s+at /.test(line)), "no stack trace");
  t.equal((await db.query("select 1 from workers")).length, 0, "deregistered");
  t.same(await db.query("select locked_by from graphile_worker.jobs where task_identifier = 'effect'"), [{ locked_by: null }], "its locked job was released");
});

t.test("graphile-worker's runner stopping on its own stops the whole worker: one log line, released jobs, exit 1", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const worker = spawnWorker(t, db, { WORKER_LOCAL_QUEUE_SIZE: "4" });
  await waitForRegistration(db, worker.child.pid!);
  // graphile-worker records completions in batches and shuts its pool down when one fails ("queue
  // is in an inconsistent state"): here a completion refused by the database. Its runner then
  // ends, resolving as if stopped; a process that went on heartbeating would hold the job forever.
  await db.query(`
    create function test_refuse_completion() returns trigger language plpgsql as $$ begin raise exception 'completion refused'; end $$;
    create trigger test_refuse_completion before delete on graphile_worker._private_jobs for each row execute function test_refuse_completion();
  `);
  await addJobs(db, "effect", [{ n: 1 }]);
  const exit = await Promise.race([worker.exited, new Promise<null>((resolve) => setTimeout(() => resolve(null), 30_000))]);
  t.not(exit, null, "the process exits");
  t.equal(exit?.code, 1, worker.output());
  const lines = worker.output().trim().split("\n");
  t.ok(lines.some((line) => /"msg":"stopped by a failure"/.test(line) && /graphile-worker's runner stopped on its own/.test(line)), "one log line says why");
  t.equal((await db.query("select 1 from workers")).length, 0, "deregistered");
  t.same(await db.query("select locked_by from graphile_worker.jobs"), [{ locked_by: null }], "the job it could not complete was released, to be completed by the next worker (its effects are recorded: the re-run is a no-op)");
  t.same(await db.query("select count(*)::int as n from test_effects"), [{ n: 1 }], "applied once");
});

t.test("a test worker schedules no hourly reconcile: with no Qdrant it would dead-letter one job in any test spanning the top of an hour", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const worker = spawnWorker(t, db);
  await waitForRegistration(db, worker.child.pid!);
  await addJobs(db, "effect", [{ n: 1 }]);
  await waitFor("the worker to run a job", async () => (await queuedJobs(db)) === 0);
  t.same(await db.query("select identifier from graphile_worker._private_known_crontabs"), [], "no cron item registered");
});

t.test("hundreds of job slots share a bounded number of connections", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  // Without a local queue every slot fetches its own jobs, 300 fetches at a time.
  const worker = spawnWorker(t, db, { WORKER_CONCURRENCY: "300", WORKER_LOCAL_QUEUE_SIZE: "1" });
  await waitForRegistration(db, worker.child.pid!);
  // Half the jobs apply one by one, half set-based; all of them wait a little in prepare, so
  // most of the 300 slots are busy at once.
  const payloads = Array.from({ length: 1_200 }, (_, n) => ({ n, prepareMs: 20 }));
  await addJobs(db, "effect", payloads.filter(({ n }) => n % 2 === 0));
  await addJobs(db, "effect_batch", payloads.filter(({ n }) => n % 2 === 1));
  const most: Record<string, number> = {};
  await waitFor("the queue to drain", async () => {
    const pools = await db.query<{ pool: string; connections: number }>(
      `select application_name as pool, count(*)::int as connections from pg_stat_activity
       where datname = current_database() and application_name in ('pgconverge-queue', 'pgconverge-app')
       group by application_name`,
    );
    for (const { pool, connections } of pools) most[pool] = Math.max(most[pool] ?? 0, connections);
    return (await queuedJobs(db)) === 0;
  }, { timeoutMs: 60_000 });
  t.same(await effectCounts(db), { rows: 1_200, distinct: 1_200 });
  // Each pool opens at most 10 connections for job slots plus a few of its own (LISTEN,
  // batched completions); a connection per slot would be 302 each.
  t.ok(Object.keys(most).length === 2 && Object.values(most).every((count) => count <= 16), `connections per pool: ${JSON.stringify(most)}`);
});
