// Sync declarations: any table of the application feeds a Qdrant collection of its own. Two
// tables (one with UUID ids, one with bigint ids) converge side by side through one relay, and
// the reconciler repairs tampering in both.
import { createHash, randomUUID } from "node:crypto";
import { sql, type CommonQueryMethods } from "slonik";
import t from "tap";
import { z } from "zod";
import { qdrantClientOf } from "../../src/api/syncs.ts";
import { enqueuePointChanges } from "../../src/outbox/outbox.ts";
import { createQdrantClient } from "../../src/outbox/qdrant.ts";
import { reconcile } from "../../src/outbox/reconciler.ts";
import { defineSync, pointIdText, type PointId, type PointState } from "../../src/outbox/sync.ts";
import { ownerOf, pendingOutbox, relayFor } from "../helpers/chunks.ts";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db.ts";
import { FakeQdrant } from "../servers/qdrant.ts";

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
const Row = z.object({ id: z.union([z.string(), z.bigint()]), label: z.string(), embedding: z.array(z.number()) });

/** A sync of one of the test's tables (`label` is the name or title column), as an application would declare it. */
function tableSync(table: "products" | "tickets", label: "name" | "title", size: number, distance?: "Dot") {
  const hashOf = (row: { label: string; embedding: number[] }) => sha256(`${row.label}|${row.embedding.join(",")}`);
  return defineSync({
    collection: table,
    vectors: { size, ...(distance ? { distance } : {}) },
    async load(db: CommonQueryMethods, ids: readonly PointId[]) {
      const rows = await db.any(sql.type(Row)`
        select id, ${sql.identifier([label])} as label, embedding::float8[] as embedding from ${sql.identifier([table])}
        where id::text = any(${sql.array(ids.map(String), "text")})
      `);
      return new Map<PointId, PointState>(rows.map((row) => [row.id, { vector: row.embedding, payload: { [label]: row.label }, hash: hashOf(row) }]));
    },
    async page(db: CommonQueryMethods, after: PointId | null, limit: number) {
      const rows = await db.any(sql.type(Row)`
        select id, ${sql.identifier([label])} as label, embedding::float8[] as embedding from ${sql.identifier([table])}
        ${after === null ? sql.fragment`` : sql.fragment`where id > ${table === "tickets" ? sql.fragment`${String(after)}::int8` : sql.fragment`${String(after)}::uuid`}`}
        order by id limit ${limit}
      `);
      return rows.map((row) => ({ id: row.id, hash: hashOf(row) }));
    },
  });
}

const products = tableSync("products", "name", 3);
const tickets = tableSync("tickets", "title", 2, "Dot");

async function createTables(db: TestDatabase) {
  await db.query(`
    create table products (id uuid primary key default gen_random_uuid(), name text not null, embedding real[] not null);
    create table tickets (id bigint generated always as identity primary key, title text not null, embedding real[] not null);
  `);
}

async function putProduct(db: TestDatabase, id: string, name: string, embedding: number[]) {
  await db.appPool.transaction(async (tx) => {
    await tx.query(sql.unsafe`
      insert into products (id, name, embedding) values (${id}, ${name}, ${sql.array(embedding, "float4")})
      on conflict (id) do update set name = excluded.name, embedding = excluded.embedding
    `);
    await enqueuePointChanges(tx, "products", [id]);
  });
}

async function addTicket(db: TestDatabase, title: string, embedding: number[]): Promise<bigint> {
  return db.appPool.transaction(async (tx) => {
    const id = await tx.oneFirst(sql.type(z.object({ id: z.bigint() }))`
      insert into tickets (title, embedding) values (${title}, ${sql.array(embedding, "float4")}) returning id
    `);
    await enqueuePointChanges(tx, "tickets", [id]);
    return id;
  });
}

/** What Qdrant should hold for a table: point id -> [label, pgconverge_hash]. */
async function expected(db: TestDatabase, sync: typeof products): Promise<Map<string, unknown>> {
  const keys = await sync.page(db.appPool, null, 10_000);
  return new Map(keys.map((key) => [pointIdText(key.id), key.hash]));
}

function actual(fake: FakeQdrant, collection: string): Map<string, unknown> {
  return new Map(fake.points(collection).map((point) => [pointIdText(point.id), point.payload.pgconverge_hash]));
}

t.test("two tables feed two collections side by side through one relay, and reconcile repairs both", async (t) => {
  const db = await createTestDatabase(t);
  await createTables(db);
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  const relay = await relayFor(db, fake, { syncs: [products, tickets], batchSize: 7 });
  await relay.start();
  t.teardown(() => relay.stop());

  const productIds = Array.from({ length: 10 }, () => randomUUID());
  for (const [i, id] of productIds.entries()) await putProduct(db, id, `product ${i}`, [1, i, 0.5]);
  const ticketIds: bigint[] = [];
  for (let i = 0; i < 10; i++) ticketIds.push(await addTicket(db, `ticket ${i}`, [i, 1]));
  await putProduct(db, productIds[0]!, "product 0, renamed", [2, 0, 0.5]);
  await db.appPool.transaction(async (tx) => {
    await tx.query(sql.unsafe`delete from tickets where id = ${ticketIds[1]!}`);
    await enqueuePointChanges(tx, "tickets", [ticketIds[1]!]);
  });
  await waitFor("the outbox to drain", async () => (await pendingOutbox(db)) === 0, { timeoutMs: 30_000 });

  t.match(fake.collections.get("products"), { size: 3, distance: "Cosine" }, "each collection made as its sync declares");
  t.match(fake.collections.get("tickets"), { size: 2, distance: "Dot" });
  t.same(actual(fake, "products"), await expected(db, products));
  t.same(actual(fake, "tickets"), await expected(db, tickets));
  const ticket = fake.points("tickets").find((point) => point.id === Number(ticketIds[2]));
  const stamp = ticket?.payload.pgconverge_version;
  t.ok(Number.isSafeInteger(stamp), "with its version stamp");
  t.same(ticket?.payload, { title: "ticket 2", pgconverge_owner: await ownerOf(db), pgconverge_hash: sha256("ticket 2|2,1"), pgconverge_version: stamp }, "integer ids stay integers in Qdrant");
  t.notOk(fake.points("tickets").some((point) => point.id === Number(ticketIds[1])), "a deleted row's point is gone");

  await relay.stop();
  const qdrant = await createQdrantClient({ url: fake.url, timeoutMs: 2_000 });
  const owner = await ownerOf(db);
  fake.collections.get("products")!.points.delete(`u:${productIds[3]}`);
  fake.collections.get("products")!.points.get(`u:${productIds[4]}`)!.payload.name = "tampered";
  fake.collections.get("tickets")!.points.get(`n:${ticketIds[5]}`)!.payload.pgconverge_hash = "0";
  await qdrant.upsert("tickets", { wait: true, points: [{ id: 999_999, vector: [1, 1], payload: { title: "no row", pgconverge_owner: owner } }] });

  const productDrift = await reconcile({ pool: db.appPool, qdrant, sync: products, repair: true, pageSize: 3 });
  const ticketDrift = await reconcile({ pool: db.appPool, qdrant, sync: tickets, repair: true, pageSize: 3 });
  t.match(productDrift, { collection: "products", missing: 1, extra: 0, stale: 1, qdrantPoints: 9, postgresPoints: 10 });
  t.match(ticketDrift, { collection: "tickets", missing: 0, extra: 1, stale: 1, qdrantPoints: 10, postgresPoints: 9 });
  while ((await pendingOutbox(db)) > 0) await relay.syncBatch();
  t.same(actual(fake, "products"), await expected(db, products), "products repaired");
  t.same(actual(fake, "tickets"), await expected(db, tickets), "tickets repaired");
  t.match(await reconcile({ pool: db.appPool, qdrant, sync: tickets, repair: false }), { missing: 0, extra: 0, stale: 0 });
  t.match(await reconcile({ pool: db.appPool, qdrant, sync: products, repair: false }), { missing: 0, extra: 0, stale: 0 });
});

t.test("a change for a collection no sync declares stays pending, with the reason in last_error", async (t) => {
  const db = await createTestDatabase(t);
  await createTables(db);
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  await enqueuePointChanges(db.appPool, "nobody_declares_me", [randomUUID(), 7]);
  const relay = await relayFor(db, fake, { syncs: [products] });
  await relay.start();
  t.teardown(() => relay.stop());
  await waitFor("the reason to be recorded", async () => (await db.query("select 1 from outbox where last_error is not null")).length === 2);
  const rows = await db.query<{ state: string; last_error: string; attempts: number }>("select state, last_error, attempts from outbox");
  t.match(rows, [
    { state: "pending", attempts: 0, last_error: /^no sync declares collection nobody_declares_me \(relay .* knows products\); the change waits for a relay that does$/ },
    { state: "pending", attempts: 0 },
  ]);
  t.notOk(fake.collections.has("nobody_declares_me"), "nothing written for it");
});

t.test("point ids: UUIDs in any spelling are one key, integers up to 2^53 - 1, nothing else", async (t) => {
  const db = await createTestDatabase(t);
  const id = randomUUID();
  await enqueuePointChanges(db.appPool, "c", [id, id.toUpperCase(), id.replace(/-/g, ""), 0, 9_007_199_254_740_991, 12n]);
  const rows = await db.query<{ point_id: string; version: string }>("select point_id, version from outbox order by length(point_id), point_id");
  t.same(rows, [
    { point_id: "0", version: "1" },
    { point_id: "12", version: "1" },
    { point_id: "9007199254740991", version: "1" },
    { point_id: id, version: "1" },
  ]);
  for (const bad of [-1, 1.5, 9_007_199_254_740_992, "01", "not-a-uuid", ""]) {
    await t.rejects(enqueuePointChanges(db.appPool, "c", [bad]), { message: /is neither a UUID nor an unsigned integer up to 2\^53 - 1$/ }, `refuses ${JSON.stringify(bad)}`);
  }
  await t.rejects(db.query("insert into outbox (collection, point_id) values ('c', 'x')"), /outbox_point_id_check/, "the table refuses it too");
});

t.test("defineSync refuses a bad declaration with one line naming it", async (t) => {
  const load = async () => new Map();
  const page = async () => [];
  t.throws(() => defineSync({ collection: "a b", vectors: { size: 3 }, load, page }), { name: "ConfigError", message: 'sync "a b": collection must be 1 to 255 letters, digits, _ or - (got "a b")' });
  t.throws(() => defineSync({ collection: "x", vectors: { size: 0 }, load, page }), { message: 'sync "x": vectors.size must be a whole number from 1 to 65536 (got 0)' });
  t.throws(() => defineSync({ collection: "x", vectors: { size: 3, distance: "cosine" as "Cosine" }, load, page }), {
    message: 'sync "x": vectors.distance must be one of Cosine, Dot, Euclid, Manhattan (got "cosine")',
  });
  t.throws(() => defineSync({ collection: "x", vectors: { size: 3 }, load, page: undefined as never }), { message: 'sync "x": page(db, after, limit) is missing' });
  t.match(defineSync({ collection: "x", vectors: { size: 3 }, load, page }).vectors, { size: 3, distance: "Cosine" }, "distance defaults to Cosine");
});

t.test("runWorker's and reconcile's qdrant options take the cluster settings, with the CLI's defaults and one-line errors", async (t) => {
  t.match(await qdrantClientOf({ url: "http://127.0.0.1:6333" }, "runWorker"), { writeOrdering: "medium", readConsistency: "majority" });
  t.match(await qdrantClientOf({ url: "http://127.0.0.1:6333", writeOrdering: "strong", readConsistency: 3 }, "runWorker"), { writeOrdering: "strong", readConsistency: 3 });
  await t.rejects(qdrantClientOf({ url: "http://127.0.0.1:6333", writeOrdering: "fast" as "weak" }, "runWorker"), { name: "ConfigError", message: /^qdrant\.writeOrdering: / });
  await t.rejects(qdrantClientOf({ url: "http://127.0.0.1:6333", readConsistency: 0 }, "reconcile"), {
    name: "ConfigError",
    message: "qdrant.readConsistency: must be majority, quorum, all or a number of replicas from 1 to 999",
  });
});
