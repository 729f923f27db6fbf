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
