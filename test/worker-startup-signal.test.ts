// A Ctrl-C while the worker is still starting: it has registered, so it must deregister before exiting.
import t from "tap";
import { createTestDatabase, waitFor } from "./helpers/db.ts";
import { spawnWorker } from "./helpers/worker.ts";

t.test("SIGINT as soon as the worker has registered still stops it in order: exit 0, deregistered", async (t) => {
  const db = await createTestDatabase(t);
  const worker = spawnWorker(t, db, { LOG_LEVEL: "info" });
  await waitFor("the worker to register", async () => (await db.query("select 1 from workers where pid = $1", [worker.child.pid])).length > 0, { intervalMs: 5 });
  worker.child.kill("SIGINT");
  const exit = await worker.exited;
  t.equal(exit.code, 0, worker.output());
  t.same(await db.query("select * from workers"), [], "deregistered");
});
