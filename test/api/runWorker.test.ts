// runWorker from an application's code: settings validated like the environment's, tasks and
// services given in code, stop() deregisters and closes what it opened.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineTask, runWorker } from "pgconverge";
import { sql } from "slonik";
import t from "tap";
import { z } from "zod";
import { createTestDatabase, testLog, waitFor } from "../helpers/db.ts";

const record = defineTask.withServices<{ stamp: () => string }>()({
  payload: z.object({ n: z.number().int() }),
  async apply({ payload, tx, services }) {
    await tx.query(sql.unsafe`insert into stamped (n, stamp) values (${payload.n}, ${services.stamp()})`);
  },
});

t.test("bad settings and options are one-line errors naming the option, before any connection", async (t) => {
  const databaseUrl = "postgres://127.0.0.1:1/none";
  const base = { databaseUrl, tasks: { record }, services: { stamp: () => "x" }, logger: testLog };
  await t.rejects(runWorker({ ...base, concurrency: 0 }), { name: "ConfigError", message: "concurrency: must be at least 1 (got 0)" });
  await t.rejects(runWorker({ ...base, heartbeatIntervalMs: 20_000 }), { message: /^deadAfterMs: must be at least 3 x heartbeatIntervalMs/ });
  await t.rejects(runWorker({ ...base, databaseUrl: undefined }), { message: "runWorker: give databaseUrl or pool" });
  await t.rejects(runWorker({ ...base, tasks: { "no-dashes": record } }), { message: /task identifier "no-dashes" must be letters/ });
  const named = defineTask({ identifier: "other", payload: z.object({}), async apply() {} });
  await t.rejects(runWorker({ ...base, tasks: { mine: named } }), { message: 'task mine is defined with identifier "other"' });
});

t.test("a worker run from code applies jobs with its services, and stop() deregisters it", async (t) => {
  const db = await createTestDatabase(t);
  await db.query("create table stamped (n int not null, stamp text not null)");
  await db.query("select graphile_worker.add_job('record', json_build_object('n', n)) from generate_series(1, 5) n");
  const ownConnections = async () =>
    (await db.query("select 1 from pg_stat_activity where datname = $1 and application_name in ('pgconverge-app', 'pgconverge-liveness')", [db.name])).length;
  const before = await ownConnections();
  const worker = await runWorker({ pool: db.pool, tasks: { record }, services: { stamp: () => "from-code" }, logger: testLog, concurrency: 2, migrate: false });
  t.ok((await db.query("select 1 from workers where id = $1", [worker.id])).length === 1, "registered under its id");
  await waitFor("the jobs to be applied", async () => (await db.query("select 1 from graphile_worker.jobs")).length === 0);
  await worker.stop();
  await worker.done;
  t.same(await db.query("select n, stamp from stamped order by n"), [1, 2, 3, 4, 5].map((n) => ({ n, stamp: "from-code" })));
  t.same(await db.query("select * from workers"), [], "deregistered");
  await waitFor("its own pools to close", async () => (await ownConnections()) === before);
  await worker.stop();
});

t.test("a worker run from code applies the application's own migrations after pgconverge's", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const directory = mkdtempSync(join(tmpdir(), "pgconverge-app-migrations-"));
  t.teardown(() => rmSync(directory, { recursive: true, force: true }));
  writeFileSync(join(directory, "000001_stamped.sql"), "create table stamped (n int not null, stamp text not null);\n");
  const worker = await runWorker({ pool: db.pool, tasks: { record }, services: { stamp: () => "x" }, logger: testLog, concurrency: 1, appMigrations: { name: "shop", directory } });
  await worker.stop();
  const recorded = await db.query<{ set: string; name: string }>("select set, name from migrations where set <> 'pgconverge'");
  t.same(recorded, [{ set: "shop", name: "000001_stamped.sql" }]);
  t.same(await db.query("select count(*)::int as n from stamped"), [{ n: 0 }], "the table exists");
});

t.test("a worker whose graphile-worker runner stops on its own: done rejects, saying so, after it deregistered and released its jobs", async (t) => {
  const db = await createTestDatabase(t);
  await db.query("create table stamped (n int not null, stamp text not null)");
  // graphile-worker gives a batch of completions up at its first error and shuts its pool down.
  await db.query(`
    create function test_refuse_completion() returns trigger language plpgsql as $$ begin raise exception 'completion refused'; end $$;
    create trigger test_refuse_completion before delete on graphile_worker._private_jobs for each row execute function test_refuse_completion();
  `);
  const worker = await runWorker({ pool: db.pool, tasks: { record }, services: { stamp: () => "x" }, logger: testLog, concurrency: 2, localQueueSize: 4, migrate: false });
  await db.query("select graphile_worker.add_job('record', json_build_object('n', 1))");
  await t.rejects(worker.done, { message: /^graphile-worker's runner stopped on its own \(completeJob failed: .*completion refused\)/ });
  t.same(await db.query("select * from workers"), [], "deregistered");
  t.same(await db.query("select locked_by from graphile_worker.jobs"), [{ locked_by: null }], "the job is free for the next worker");
  t.same(await db.query("select n from stamped"), [{ n: 1 }], "its effects committed once");
  await worker.stop();
});

t.test("stop() while graphile-worker shuts its pool down on its own: a job still running keeps its lock and finishes before the worker deregisters; done still rejects", async (t) => {
  const db = await createTestDatabase(t);
  await db.query("create table stamped (n int not null, stamp text not null)");
  const slow = defineTask({
    payload: z.object({ n: z.number().int(), ms: z.number().int() }),
    prepare: ({ payload }) => new Promise<void>((resolve) => setTimeout(resolve, payload.ms)),
    async apply({ payload, tx }) {
      await tx.query(sql.unsafe`insert into stamped (n, stamp) values (${payload.n}, 'slow')`);
    },
  });
  // Only job 1's completion is refused: graphile-worker starts shutting its pool down while job 2 prepares.
  await db.query(`
    create function test_refuse_completion() returns trigger language plpgsql as $$ begin raise exception 'completion refused'; end $$;
    create trigger test_refuse_completion before delete on graphile_worker._private_jobs for each row when (old.payload->>'n' = '1') execute function test_refuse_completion();
  `);
  const worker = await runWorker({ pool: db.pool, tasks: { slow }, services: {}, logger: testLog, concurrency: 2, localQueueSize: 4, migrate: false });
  const done = worker.done.then(() => null, (error: unknown) => error);
  await db.query("select graphile_worker.add_job('slow', json_build_object('n', 1, 'ms', 0)), graphile_worker.add_job('slow', json_build_object('n', 2, 'ms', 2500))");
  await waitFor("job 1 to be applied", async () => (await db.query("select 1 from stamped where n = 1")).length === 1);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const stopping = worker.stop();
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.same(await db.query("select 1 from workers"), [{ "?column?": 1 }], "still registered while job 2 runs");
  t.same(await db.query("select payload->>'n' as n from graphile_worker._private_jobs where locked_by is not null order by 1"), [{ n: "1" }, { n: "2" }], "job 2 keeps its lock while it runs");
  await stopping;
  t.match(await done, { message: /^graphile-worker's runner stopped on its own \(completeJob failed: .*completion refused\)/ }, "done rejects, saying why");
  t.same(await db.query("select n from stamped order by n"), [{ n: 1 }, { n: 2 }], "job 2 finished before the worker deregistered");
  t.same(await db.query("select * from workers"), [], "deregistered");
});
