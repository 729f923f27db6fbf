// An application that mirrors its own table into Qdrant with the installed package: it declares
// a sync of `products`, writes rows and their outbox changes in its own transaction, relays them
// from a worker started in its code, then finds and repairs tampering with the reconciler.
// Prints one line, RESULT {...}, for the test to check.
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { defineSync, enqueueSync, migrate, reconcile, runWorker } from "pgconverge";
import { sql } from "slonik";
import { z } from "zod";

const databaseUrl = process.env.DATABASE_URL;
const qdrant = { url: process.env.QDRANT_URL };
const pool = new pg.Pool({ connectionString: databaseUrl, max: 8 });
const count = async (query) => Number((await pool.query(query)).rows[0].count);

await migrate({ pool });
await pool.query("create table products (id bigint primary key, name text not null, embedding real[] not null)");

const Row = z.object({ id: z.coerce.number(), name: z.string(), embedding: z.array(z.number()) });
const hashOf = (row) => createHash("sha256").update(JSON.stringify([row.name, row.embedding])).digest("hex");

const productSync = defineSync({
  collection: "products",
  vectors: { size: 3 },
  // The current point of each id, or nothing when the row is gone.
  async load(db, ids) {
    const rows = await db.any(sql.type(Row)`
      select id, name, embedding::float8[] as embedding from products where id = any(${sql.array(ids.map(String), "int8")})
    `);
    return new Map(rows.map((row) => [row.id, { vector: row.embedding, payload: { name: row.name }, hash: hashOf(row) }]));
  },
  // Every id that should have a point, with its hash, in id order after `after`.
  async page(db, after, limit) {
    const rows = await db.any(sql.type(Row)`
      select id, name, embedding::float8[] as embedding from products
      where id > ${after === null ? -1 : String(after)}::int8 order by id limit ${limit}
    `);
    return rows.map((row) => ({ id: row.id, hash: hashOf(row) }));
  },
});

async function write(statements, ids, commit) {
  const client = await pool.connect();
  try {
    await client.query("begin");
    for (const [text, values] of statements) await client.query(text, values);
    await enqueueSync(client, productSync, ids);
    await client.query(commit ? "commit" : "rollback");
  } finally {
    client.release();
  }
}

await write([["insert into products values (9, 'ghost', '{1,1,1}')", []]], [9], false);
const outboxAfterRollback = await count("select count(*) from outbox");
await write(
  [
    ["insert into products values (1, 'lamp', '{1,0,0}'), (2, 'desk', '{0,1,0}'), (3, 'chair', '{0,0,1}')", []],
  ],
  [1, 2, 3],
  true,
);
const outboxAfterCommit = await count("select count(*) from outbox");

const worker = await runWorker({ pool, tasks: {}, syncs: [productSync], qdrant, relay: { pollIntervalMs: 200 }, concurrency: 2, migrate: false });
const drained = async () => {
  const deadline = Date.now() + 60_000;
  while ((await count("select count(*) from outbox")) > 0) {
    if (Date.now() > deadline) throw new Error("the outbox did not drain in 60 s");
    await sleep(100);
  }
};
const scroll = async () => {
  const response = await fetch(`${qdrant.url}/collections/products/points/scroll`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ limit: 100, with_payload: true, with_vector: true }),
  });
  const { result } = await response.json();
  return result.points.map((point) => ({ id: point.id, name: point.payload.name, vector: point.vector })).sort((a, b) => a.id - b.id);
};

await drained();
const afterInsert = await scroll();

// An update and a delete, each with its change in the same transaction.
await write([["update products set name = 'big lamp' where id = 1", []], ["delete from products where id = 3", []]], [1, 3], true);
await drained();
const afterUpdate = await scroll();

// Tampering behind pgconverge's back: a point deleted, another's payload changed.
const post = (path, method, body) =>
  fetch(`${qdrant.url}/collections/products/points${path}?wait=true`, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
await post("/delete", "POST", { points: [1] });
const [desk] = (await (await post("/scroll", "POST", { limit: 1, with_payload: true, with_vector: true, filter: { must: [{ has_id: [2] }] } })).json()).result.points;
await post("", "PUT", { points: [{ id: 2, vector: desk.vector, payload: { ...desk.payload, name: "tampered" } }] });

const [found] = await reconcile({ pool, qdrant, syncs: [productSync] });
const [repaired] = await reconcile({ pool, qdrant, syncs: [productSync], repair: true });
await drained();
const [after] = await reconcile({ pool, qdrant, syncs: [productSync] });
const afterRepair = await scroll();

await worker.stop();
await worker.done;
const drift = (report) => ({ missing: report.missing, extra: report.extra, stale: report.stale, repaired: report.repaired });
console.log(
  `RESULT ${JSON.stringify({
    outboxAfterRollback,
    outboxAfterCommit,
    afterInsert,
    afterUpdate,
    found: drift(found),
    repaired: drift(repaired),
    after: drift(after),
    afterRepair,
    workersLeft: await count("select count(*) from workers"),
  })}`,
);
await pool.end();
