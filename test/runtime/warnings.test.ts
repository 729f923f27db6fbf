// Node's process warnings (MaxListenersExceededWarning and the like) are leaks caught in the
// act: a worker at ordinary concurrency must run hundreds of jobs without printing one.
import t from "tap";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, queuedJobs } from "../helpers/fixtures.ts";
import { spawnWorker, waitForRegistration } from "../helpers/worker.ts";

t.test("a worker at concurrency 12 runs 400 jobs with a prepare phase without a Node warning", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const worker = spawnWorker(t, db, { WORKER_CONCURRENCY: "12" });
  await waitForRegistration(db, worker.child.pid!);
  // A prepare that waits a little keeps many jobs in prepare at once.
  await addJobs(db, "effect", Array.from({ length: 400 }, (_, n) => ({ n, prepareMs: 20 })));
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 120_000 });
  t.same(await effectCounts(db), { rows: 400, distinct: 400 });
  worker.child.kill("SIGTERM");
  t.same(await worker.exited, { code: 0, signal: null });
  t.notMatch(worker.output(), /Warning/, "no Node warning was printed");
});
