// An application using the installed package: its own table, its own task and service, a
// job enqueued in its own pg transaction, a worker started and stopped from its code.
// Prints one line, RESULT {...}, for the test to check.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { addJob, defineTask, migrate, PermanentError, runWorker } from "pgconverge";
import { sql } from "slonik";
import { z } from "zod";

const databaseUrl = process.env.DATABASE_URL;
const pool = new pg.Pool({ connectionString: databaseUrl, max: 8 });
const count = async (query) => Number((await pool.query(query)).rows[0].count);

await migrate({ pool });
await pool.query("create table products (id int primary key, name text not null)");
await pool.query("create table product_index (product_id int not null references products, label text not null)");

// The application's own long-lived client, handed to the task by the worker.
const catalog = {
  calls: 0,
  async label(name, signal) {
    signal.throwIfAborted();
    this.calls += 1;
    return name.toUpperCase();
  },
};

const indexProduct = defineTask.withServices()({
  identifier: "index_product",
  payload: z.object({ id: z.number().int() }),
  async prepare({ payload, db, services, signal }) {
    const name = await db.maybeOneFirst(sql.unsafe`select name from products where id = ${payload.id}`);
    if (name === null) throw new PermanentError(`product ${payload.id} does not exist`);
    return services.catalog.label(name, signal);
  },
  async apply({ payload, prepared, tx }) {
    await tx.query(sql.unsafe`insert into product_index (product_id, label) values (${payload.id}, ${prepared})`);
  },
});

const client = await pool.connect();
await client.query("begin");
await client.query("insert into products (id, name) values (1, 'lamp')");
await addJob(client, indexProduct, { id: 1 });
await client.query("rollback");
const jobsAfterRollback = await count("select count(*) from graphile_worker.jobs");

await client.query("begin");
await client.query("insert into products (id, name) values (1, 'lamp')");
await addJob(client, indexProduct, { id: 1 });
await client.query("commit");
const jobsAfterCommit = await count("select count(*) from graphile_worker.jobs");

let invalidPayload = null;
try {
  await addJob(client, indexProduct, { id: "one" });
} catch (error) {
  invalidPayload = error.message;
}
client.release();

const worker = await runWorker({ pool, tasks: { index_product: indexProduct }, services: { catalog }, concurrency: 2, migrate: false });
const deadline = Date.now() + 60_000;
while ((await count("select count(*) from graphile_worker.jobs")) > 0 && Date.now() < deadline) await sleep(100);
await worker.stop();
await worker.done;

const { rows: indexed } = await pool.query("select product_id, label from product_index");
const workersLeft = await count("select count(*) from workers");
console.log(`RESULT ${JSON.stringify({ jobsAfterRollback, jobsAfterCommit, invalidPayload, indexed, catalogCalls: catalog.calls, jobsLeft: await count("select count(*) from graphile_worker.jobs"), workerId: worker.id, workersLeft })}`);
await pool.end();
