// Every connection of the database terminated (a failover, an operator's pg_terminate_backend)
// while a worker with a local queue is failing and completing jobs: the worker rides it out and
// every job still ends applied exactly once.
import t from "tap";
import { createTestDatabase, waitFor } from "./helpers/db.ts";
import { addJobs, createEffectsTable } from "./helpers/fixtures.ts";
import { spawnWorker, waitForRegistration } from "./helpers/worker.ts";

const JOBS = 120;

t.test("all backends terminated while a local-queue worker fails jobs transiently: it keeps running, each job applied once", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const worker = spawnWorker(t, db, { WORKER_CONCURRENCY: "4", WORKER_LOCAL_QUEUE_SIZE: "4" });
  await waitForRegistration(db, worker.child.pid!, 120_000);
  // Recording an outcome (graphile-worker's delete of completed jobs, its update of failed ones)
  // takes a moment here, so that the terminations below land while one is in flight.
  await db.query(`
    create function test_slow_outcome() returns trigger language plpgsql as $$ begin perform pg_sleep(0.2); return null; end $$;
    create trigger test_slow_complete before delete on graphile_worker._private_jobs for each statement execute function test_slow_outcome();
    create trigger test_slow_fail before update of last_error on graphile_worker._private_jobs for each statement execute function test_slow_outcome();
  `);
  // Every job fails its first attempt (a transient error, so failJobs records a retry), then applies.
  await addJobs(db, "effect", Array.from({ length: JOBS }, (_, n) => ({ n, failTimes: 1, prepareMs: 20 })), { maxAttempts: 10 });
  // Terminate every session of the database, over and over, while failures and completions are recorded.
  for (let round = 0; round < 25; round++) {
    await new Promise((resolve) => setTimeout(resolve, 150));
    await db.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()").catch(() => {});
  }
  t.teardown(async () => {
    if (t.passing()) return;
    t.comment(worker.output().slice(-6_000));
    t.comment(JSON.stringify(await db.query("select attempts, locked_by is not null as locked, run_at > now() as later, left(last_error, 120) as error, count(*) from graphile_worker.jobs group by 1, 2, 3, 4")));
    t.comment(JSON.stringify(await db.query("select count(*) from test_effects")));
  });
  await waitFor(
    "every job to be applied",
    async () => {
      if (worker.child.exitCode !== null) throw new Error(`the worker exited with code ${worker.child.exitCode}`);
      // graphile-worker gave up on its pool (a failed outcome batch is fatal to it): nothing more will run.
      if (worker.output().includes("Runner stopping")) throw new Error("graphile-worker's runner stopped");
      return (await db.query<{ n: number }>("select count(distinct n)::int as n from test_effects"))[0]!.n === JOBS;
    },
    { timeoutMs: 60_000, intervalMs: 250 },
  );
  t.equal(worker.child.exitCode, null, "the worker is still running");
  const [effects] = await db.query<{ rows: number; distinct: number }>("select count(*)::int as rows, count(distinct n)::int as distinct from test_effects");
  t.same(effects, { rows: JOBS, distinct: JOBS }, "each job's writes committed exactly once");
  await waitFor("the queue to drain", async () => (await db.query("select 1 from graphile_worker.jobs")).length === 0, { timeoutMs: 120_000 });
});
