// The connection budget through a transaction-mode pooler: server connections are what the
// pooler hands out per transaction, so a fleet shares a small pool. Ten workers behind a
// PgBouncer holding at most 20 server connections for the database all run jobs.
import t from "tap";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, queuedJobs } from "../helpers/fixtures.ts";
import { SKIP_WITHOUT_PGBOUNCER, startPgBouncer } from "../helpers/pgbouncer.ts";
import { spawnWorker, waitForRegistration } from "../helpers/worker.ts";

const WORKERS = 10;
const JOBS = 400;

t.test("ten workers fit in a pool of 20 server connections: every one of them processes jobs", { skip: SKIP_WITHOUT_PGBOUNCER }, async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const pooled = (await startPgBouncer(t, db.url, { poolSize: 20, maxDbConnections: 20 })).urlFor(db.url);
  // Each worker alone would open up to 2 x 4 + 9 client connections: 170 for the fleet, against 20.
  // A local queue no larger than the slots, so that the first workers to poll do not fetch the
  // whole queue (the default fetches up to 100 jobs at a time) and every worker gets some.
  const workers = Array.from({ length: WORKERS }, () =>
    spawnWorker(t, { url: pooled }, { DATABASE_POOL_MODE: "transaction", WORKER_CONCURRENCY: "4", WORKER_LOCAL_QUEUE_SIZE: "4" }),
  );
  // Ten processes starting at once on a small, shared machine: give them time (seen: 3 minutes
  // before the first one connected, all registered within 30 s after that).
  await Promise.all(workers.map((worker) => waitForRegistration(db, worker.child.pid!, 400_000)));
  // Jobs that take a while in prepare (no connection held), so that every worker, polling every
  // 200 ms, finds some before the queue drains.
  await addJobs(db, "effect", Array.from({ length: JOBS }, (_, n) => ({ n, prepareMs: 100 })));
  await waitFor("every job to complete", async () => (await queuedJobs(db)) === 0, { timeoutMs: 120_000 });
  t.same(await effectCounts(db), { rows: JOBS, distinct: JOBS }, "one effect per job");
  const pids = (await db.query<{ pid: number }>("select distinct pid from test_effects")).map((row) => row.pid).sort();
  t.same(pids, workers.map((worker) => worker.child.pid!).sort(), "every worker ran jobs");
  t.same(workers.map((worker) => worker.child.exitCode), workers.map(() => null), "no worker died");
});
