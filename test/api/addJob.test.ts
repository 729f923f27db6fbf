// The public addJob through each driver shape an application may hold: its job exists iff the
// application's transaction commits.
import pg from "pg";
import { addJob, addJobs, defineTask } from "pgconverge";
import { sql } from "slonik";
import t from "tap";
import { z } from "zod";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

const notify = defineTask({ identifier: "notify", payload: z.object({ n: z.number().int() }), async apply() {} });

const jobs = async (db: TestDatabase) =>
  db.query<{ task_identifier: string; payload: unknown; key: string | null; priority: number }>(
    // The jobs view leaves out payloads; they are read from graphile-worker's table.
    `select task.identifier as task_identifier, job.payload, job.key, job.priority
     from graphile_worker._private_jobs job join graphile_worker._private_tasks task on task.id = job.task_id
     order by job.id`,
  );

t.test("a pg client in a transaction: rolled back, no job; committed, one", async (t) => {
  const db = await createTestDatabase(t);
  const client = await db.pool.connect();
  t.teardown(() => client.release());
  await client.query("begin");
  await addJob(client, notify, { n: 1 });
  await client.query("rollback");
  t.same(await jobs(db), []);
  await client.query("begin");
  await addJob(client, notify, { n: 2 }, { jobKey: "notify-2", priority: 3 });
  await client.query("commit");
  t.same(await jobs(db), [{ task_identifier: "notify", payload: { n: 2 }, key: "notify-2", priority: 3 }]);
});

t.test("a pg pool, by identifier: the job commits on its own", async (t) => {
  const db = await createTestDatabase(t);
  const pool = new pg.Pool({ connectionString: db.url, max: 1 });
  t.teardown(() => pool.end());
  await addJob(pool, "notify", { n: 3 });
  t.same(await jobs(db), [{ task_identifier: "notify", payload: { n: 3 }, key: null, priority: 0 }]);
});

t.test("a slonik transaction: the job rolls back with it, or commits with it", async (t) => {
  const db = await createTestDatabase(t);
  await t.rejects(
    db.appPool.transaction(async (tx) => {
      await addJob(tx, notify, { n: 4 });
      throw new Error("the application's transaction fails");
    }),
    { message: "the application's transaction fails" },
  );
  t.same(await jobs(db), []);
  await db.appPool.transaction(async (tx) => {
    await tx.query(sql.unsafe`select 1`);
    await addJob(tx, notify, { n: 5 });
  });
  await addJob(db.appPool, "notify", { n: 6 });
  t.same((await jobs(db)).map((job) => job.payload), [{ n: 5 }, { n: 6 }]);
});

t.test("anything with query(text, values)", async (t) => {
  const db = await createTestDatabase(t);
  const seen: string[] = [];
  const driver = { query: (text: string, values: unknown[]) => (seen.push(text), db.pool.query(text, values)) };
  await addJob(driver, notify, { n: 7 });
  t.equal(seen.length, 1, "one statement, atomic on any driver");
  t.same((await jobs(db)).map((job) => job.payload), [{ n: 7 }]);
});

t.test("a bad payload or a task without identifier is refused before anything is written", async (t) => {
  const db = await createTestDatabase(t);
  await t.rejects(addJob(db.pool, notify, { n: "x" } as never), { message: /^addJob notify: invalid payload: n: Expected number/ });
  const anonymous = defineTask({ payload: z.object({}), async apply() {} });
  await t.rejects(addJob(db.pool, anonymous, {}), { message: /has no identifier/ });
  await t.rejects(addJob({} as never, "notify", {}), { message: /db must be a pg client or pool/ });
  t.same(await jobs(db), []);
});

const runAts = async (db: TestDatabase) =>
  db.query<{ key: string | null; payload: unknown; delay_s: number }>(
    `select job.key, job.payload, round(extract(epoch from job.run_at - now()))::int as delay_s
     from graphile_worker._private_jobs job order by job.id`,
  );

t.test("jobKeyMode: replace pushes the run back with each enqueue, preserve_run_at keeps the first", async (t) => {
  const db = await createTestDatabase(t);
  const inSeconds = (s: number) => new Date(Date.now() + s * 1000);
  await addJob(db.pool, notify, { n: 1 }, { jobKey: "debounced", runAt: inSeconds(100) });
  await addJob(db.pool, notify, { n: 2 }, { jobKey: "debounced", runAt: inSeconds(300) });
  await addJob(db.pool, notify, { n: 1 }, { jobKey: "throttled", jobKeyMode: "preserve_run_at", runAt: inSeconds(100) });
  await addJob(db.pool, notify, { n: 2 }, { jobKey: "throttled", jobKeyMode: "preserve_run_at", runAt: inSeconds(300) });
  t.same(await runAts(db), [
    { key: "debounced", payload: { n: 2 }, delay_s: 300 },
    { key: "throttled", payload: { n: 2 }, delay_s: 100 },
  ]);
});

t.test("addJobs: many jobs in one statement, the same as addJob for each, through every driver", async (t) => {
  const db = await createTestDatabase(t);
  const seen: string[] = [];
  const driver = { query: (text: string, values: unknown[]) => (seen.push(text), db.pool.query(text, values)) };
  await addJobs(driver, notify, [
    { payload: { n: 1 }, spec: { jobKey: "a", priority: 2 } },
    { payload: { n: 2 } },
    { payload: { n: 3 }, spec: { jobKey: "a" } }, // replaces the first, as a second addJob would
  ]);
  t.equal(seen.length, 1, "one statement");
  t.same(await jobs(db), [
    { task_identifier: "notify", payload: { n: 3 }, key: "a", priority: 0 },
    { task_identifier: "notify", payload: { n: 2 }, key: null, priority: 0 },
  ]);
  await t.rejects(
    db.appPool.transaction(async (tx) => {
      await addJobs(tx, "notify", [{ payload: { n: 4 } }, { payload: { n: 5 }, spec: { queueName: "serial" } }]);
      throw new Error("rolled back");
    }),
    { message: "rolled back" },
  );
  t.equal((await jobs(db)).length, 2, "a slonik transaction that rolls back takes its jobs with it");
  await db.appPool.transaction((tx) => addJobs(tx, "notify", [{ payload: { n: 4 } }, { payload: { n: 5 }, spec: { queueName: "serial" } }]));
  t.equal((await jobs(db)).length, 4);
  await addJobs(db.pool, notify, []);
  t.equal((await jobs(db)).length, 4, "an empty list writes nothing");
});

t.test("a bad spec or payload is one line, and nothing is written", async (t) => {
  const db = await createTestDatabase(t);
  const cases: Array<[object, RegExp]> = [
    [{ jobKeyMode: "preserve_run_at" }, /^addJob notify: jobKeyMode needs a jobKey$/],
    [{ jobKey: "k", jobKeyMode: "unsafe_dedupe" }, /^addJob notify: jobKeyMode must be one of replace, preserve_run_at \(got "unsafe_dedupe"\)$/],
    [{ runAt: new Date("nonsense") }, /^addJob notify: runAt must be a valid Date$/],
    [{ priority: 1.5 }, /^addJob notify: priority must be a whole number from -32767 to 32767 \(got 1.5\)$/],
    [{ maxAttempts: 0 }, /^addJob notify: maxAttempts must be a whole number from 1 to 32767 \(got 0\)$/],
    [{ jobKey: "" }, /^addJob notify: jobKey must be a non-empty string$/],
    [{ queueName: "" }, /^addJob notify: queueName must be a non-empty string/],
  ];
  for (const [spec, message] of cases) await t.rejects(addJob(db.pool, notify, { n: 1 }, spec as never), { message }, JSON.stringify(spec));
  await t.rejects(addJobs(db.pool, notify, [{ payload: { n: 1 } }, { payload: { n: 2 }, spec: { jobKeyMode: "replace" } }]), {
    message: "addJobs notify (job 1): jobKeyMode needs a jobKey",
  });
  await t.rejects(addJobs(db.pool, notify, [{ payload: { n: "x" } as never }]), { message: /^addJobs notify \(job 0\): invalid payload: n: / });
  t.same(await jobs(db), []);
});
