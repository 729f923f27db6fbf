// The public addJob through each driver shape an application may hold: its job exists iff the
// application's transaction commits.
import pg from "pg";
import { addJob, defineTask } from "pgconverge";
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
