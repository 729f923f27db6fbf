// New connections refused for a moment (as while Postgres restarts) under a worker with a local
// queue: the worker waits for the server and goes on; every job is applied exactly once.
// graphile-worker gives a batch of completions up at the first refused connect and then shuts its
// pool down, which stopped the worker (chaos test). Here graphile-worker's pool opens a
// connection for each use while the worker's own pools keep theirs, so jobs go on being applied
// and completed during the refusal; then the same with every connection cut too.
import pg from "pg";
import { defineTask, runWorker } from "pgconverge";
import { sql } from "slonik";
import t from "tap";
import { z } from "zod";
import { createTestDatabase, testLog, waitFor } from "./helpers/db.ts";
import { forwarder, freePort } from "./helpers/forwarder.ts";

const JOBS = 150;

const record = defineTask({
  payload: z.object({ n: z.number().int() }),
  prepare: () => new Promise<void>((resolve) => setTimeout(resolve, 20)),
  async apply({ payload, tx }) {
    await tx.query(sql.unsafe`insert into recorded (n) values (${payload.n})`);
  },
});

for (const outage of ["refuseNew", "stop"] as const) {
t.test(`${outage === "stop" ? "connections cut and new ones" : "new connections"} refused for 1.5 s while jobs complete: the worker rides it out, each job applied once`, async (t) => {
  const db = await createTestDatabase(t);
  await db.query("create table recorded (n int not null)");
  const server = forwarder(await freePort(), db.url);
  await server.start();
  t.teardown(() => server.stop());
  // A connection per use: each fetch and completion of graphile-worker's connects.
  const pool = new pg.Pool({ connectionString: server.url, max: 10, idleTimeoutMillis: 1 });
  t.teardown(() => pool.end());
  // Heartbeats of 300 ms: a look for lost jobs every 9 s. A fetch whose reply is cut off leaves
  // its jobs locked under the worker that never got them; they are released after two looks.
  const worker = await runWorker({
    pool, tasks: { record }, services: {}, logger: testLog, concurrency: 4, localQueueSize: 4, migrate: false,
    heartbeatIntervalMs: 300, deadAfterMs: 2_000,
  });
  let settled: unknown = null;
  void worker.done.then(() => (settled = "resolved"), (error: unknown) => (settled = error));
  t.teardown(() => worker.stop());
  await db.query("select graphile_worker.add_job('record', json_build_object('n', n), max_attempts => 25) from generate_series(1, $1) n", [JOBS]);

  t.teardown(async () => {
    if (t.passing()) return;
    const left = await db.query("select id, attempts, locked_by, locked_at, run_at - now() as due_in, left(last_error, 150) as error from graphile_worker._private_jobs order by id limit 10");
    t.comment(JSON.stringify(left));
  });
  await waitFor("some jobs to be applied", async () => (await db.query<{ n: number }>("select count(*)::int as n from recorded"))[0]!.n >= 20);
  await server[outage]();
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  await server.start();

  await waitFor(
    "every job to be applied",
    async () => {
      if (settled !== null) throw new Error(`the worker stopped: ${String(settled)}`);
      return (await db.query<{ n: number }>("select count(distinct n)::int as n from recorded"))[0]!.n === JOBS;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
  t.equal(settled, null, "the worker is still running");
  const [counts] = await db.query<{ rows: number; distinct: number }>("select count(*)::int as rows, count(distinct n)::int as distinct from recorded");
  t.same(counts, { rows: JOBS, distinct: JOBS }, "each job's writes committed exactly once");
  await waitFor("the queue to drain", async () => (await db.query("select 1 from graphile_worker.jobs")).length === 0, { timeoutMs: 60_000 });
  await worker.stop();
});
}
