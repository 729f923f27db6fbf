import { randomUUID } from "node:crypto";
import t from "tap";
import { enqueuePointChanges, retryDead } from "../../src/outbox/outbox.ts";
import { createQdrantClient, ensureCollection } from "../../src/outbox/qdrant.ts";
import { COLLECTION, contractPayload, deleteChunk, DIMENSIONS, insertDocument, pendingOutbox, postgresPoints, putChunk, qdrantPoints, relayFor, sha256 } from "../helpers/chunks.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { FakeQdrant } from "../servers/qdrant.ts";

async function setup(t: Parameters<typeof createTestDatabase>[0], size = DIMENSIONS) {
  const db = await createTestDatabase(t);
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  await ensureCollection(await createQdrantClient({ url: fake.url, timeoutMs: 2_000 }), { name: COLLECTION, size, distance: "Cosine" });
  return { db, fake };
}

async function drained(db: Awaited<ReturnType<typeof createTestDatabase>>, timeoutMs = 30_000) {
  await waitFor("the outbox to drain", async () => (await pendingOutbox(db)) === 0, { timeoutMs });
}

t.test("writes, updates and deletes reach Qdrant with the payload the data contract names", async (t) => {
  const { db, fake } = await setup(t);
  const relay = await relayFor(db, fake);
  await relay.start();
  t.teardown(() => relay.stop());
  const documentId = await insertDocument(db, "docs/a.md");
  const [a, b] = [randomUUID(), randomUUID()];
  await putChunk(db, documentId, a, "alpha");
  await putChunk(db, documentId, b, "beta");
  await drained(db);
  const point = fake.points(COLLECTION).find((p) => p.id === a);
  const stamp = point?.payload.pgconverge_version;
  t.ok(Number.isSafeInteger(stamp) && (stamp as number) > 0, "the write's version stamp, a positive integer");
  t.same(point?.payload, await contractPayload(db, { documentId, source: "docs/a.md", content: "alpha" }, stamp));
  await putChunk(db, documentId, a, "alpha, edited");
  await deleteChunk(db, b);
  await drained(db);
  t.same(qdrantPoints(fake), new Map([[a, sha256("alpha, edited")]]));
});

t.test("ten writes to one key before the relay runs cost one Qdrant write", async (t) => {
  const { db, fake } = await setup(t);
  const documentId = await insertDocument(db);
  const id = randomUUID();
  for (let i = 0; i < 10; i++) await putChunk(db, documentId, id, `version ${i}`);
  const [row] = await db.query<{ version: string }>("select version from outbox");
  t.equal(row?.version, "10", "one row, version 10");
  const relay = await relayFor(db, fake);
  await relay.syncBatch();
  t.equal(fake.requests.get("PUT /collections/{name}/points"), 1);
  t.same(qdrantPoints(fake), new Map([[id, sha256("version 9")]]));
});

t.test("a change written while its sync is in flight is synced again, not acknowledged", async (t) => {
  const { db, fake } = await setup(t);
  const documentId = await insertDocument(db);
  const id = randomUUID();
  await putChunk(db, documentId, id, "first");
  const relay = await relayFor(db, fake);
  await relay.prepareCollections();
  fake.faults.next({ kind: "delay", ms: 500 });
  const inFlight = relay.syncBatch();
  await new Promise((resolve) => setTimeout(resolve, 150));
  await putChunk(db, documentId, id, "second");
  const report = await inFlight;
  t.equal(report.synced, 0, "the stale version was not acknowledged");
  t.equal(await pendingOutbox(db), 1);
  await relay.syncBatch();
  t.same(qdrantPoints(fake), new Map([[id, sha256("second")]]));
  t.equal(await pendingOutbox(db), 0);
});

t.test("Qdrant down for a while, then back: the relay catches up on its own", async (t) => {
  const { db, fake } = await setup(t);
  const relay = await relayFor(db, fake);
  await relay.prepareCollections();
  await relay.start();
  t.teardown(() => relay.stop());
  await fake.down();
  const documentId = await insertDocument(db);
  const ids = Array.from({ length: 50 }, () => randomUUID());
  for (const id of ids) await putChunk(db, documentId, id, `text ${id}`);
  await waitFor("failed attempts to be recorded", async () => {
    const rows = await db.query<{ attempts: number; last_error: string }>("select attempts, last_error from outbox where attempts >= 2 limit 1");
    return rows[0];
  });
  const [failing] = await db.query<{ last_error: string }>("select last_error from outbox limit 1");
  t.match(failing?.last_error, /^Qdrant unreachable: .*ECONNREFUSED/);
  await fake.up();
  await drained(db);
  t.same(qdrantPoints(fake), await postgresPoints(db));
  t.equal((await db.query("select 1 from outbox where state = 'dead'")).length, 0, "an outage kills nothing");
});

t.test("429 with Retry-After is honoured", async (t) => {
  const { db, fake } = await setup(t);
  const documentId = await insertDocument(db);
  await putChunk(db, documentId, randomUUID(), "x");
  const relay = await relayFor(db, fake);
  await relay.prepareCollections();
  fake.faults.next({ kind: "status", status: 429, retryAfterSeconds: 2, message: "Too many requests" });
  await relay.syncBatch();
  const [row] = await db.query<{ wait_s: number; attempts: number }>(
    "select extract(epoch from next_attempt_at - updated_at)::float8 as wait_s, attempts from outbox",
  );
  t.ok(row!.wait_s >= 1.9, `next attempt ${row!.wait_s.toFixed(2)} s later`);
  t.equal(row!.attempts, 1);
});

t.test("a wrong vector size ends dead with a clear reason, not in an endless retry", async (t) => {
  const { db, fake } = await setup(t);
  const documentId = await insertDocument(db);
  const [good, bad] = [randomUUID(), randomUUID()];
  await putChunk(db, documentId, good, "good");
  await putChunk(db, documentId, bad, "bad", [0.1, 0.2, 0.3]);
  await (await relayFor(db, fake)).syncBatch();
  const dead = await db.query<{ point_id: string; last_error: string }>("select point_id, last_error from outbox where state = 'dead'");
  t.same(dead, [{ point_id: bad, last_error: `vector has 3 dimensions; collection "${COLLECTION}" expects ${DIMENSIONS}` }]);
  t.same([...qdrantPoints(fake).keys()], [good], "the good point of the same batch went through");
});

t.test("Qdrant rejecting a batch (400) kills only the offending points; after the fix, outbox retry converges", async (t) => {
  const { db, fake } = await setup(t);
  const relay = await relayFor(db, fake);
  t.ok(await relay.prepareCollections());
  // Someone recreates the collection with another size behind the relay's back.
  const client = await createQdrantClient({ url: fake.url, timeoutMs: 2_000 });
  await client.deleteCollection(COLLECTION);
  await client.createCollection(COLLECTION, { vectors: { size: DIMENSIONS + 1, distance: "Cosine" } });
  const documentId = await insertDocument(db);
  const ids = [randomUUID(), randomUUID(), randomUUID()];
  for (const id of ids) await putChunk(db, documentId, id, `text ${id}`);
  const report = await relay.syncBatch();
  t.equal(report.dead, 3);
  const dead = await db.query<{ last_error: string }>("select distinct last_error from outbox where state = 'dead'");
  t.same(dead, [{ last_error: `Qdrant 400: Wrong input: Vector dimension error: expected dim: ${DIMENSIONS + 1}, got ${DIMENSIONS}` }]);
  await relay.syncBatch();
  t.equal((await db.query("select 1 from outbox where state = 'dead'")).length, 3, "dead rows stay visible, untouched");

  await client.deleteCollection(COLLECTION);
  await ensureCollection(client, { name: COLLECTION, size: DIMENSIONS, distance: "Cosine" });
  t.equal((await retryDead(db.appPool)).length, 3);
  await relay.syncBatch();
  t.same(qdrantPoints(fake), await postgresPoints(db));
  t.equal((await db.query("select 1 from outbox")).length, 0);
});

t.test("a collection with another vector size is refused with one clear line", async (t) => {
  const { db, fake } = await setup(t, DIMENSIONS + 4);
  await t.rejects((await relayFor(db, fake)).prepareCollections(), {
    name: "ConfigError",
    message: `Qdrant collection "${COLLECTION}" has ${DIMENSIONS + 4}-dimensional Cosine vectors, but its sync declares ${DIMENSIONS}-dimensional Cosine; sync to another collection or recreate this one`,
  });
});

t.test("a missing collection is created; one deleted behind the relay's back is recreated and refilled", async (t) => {
  const db = await createTestDatabase(t);
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  const relay = await relayFor(db, fake);
  const documentId = await insertDocument(db);
  const id = randomUUID();
  await putChunk(db, documentId, id, "one");
  await relay.syncBatch();
  t.same(fake.collections.get(COLLECTION)?.size, DIMENSIONS, "created with the embedding size");
  fake.collections.delete(COLLECTION);
  await putChunk(db, documentId, id, "two");
  await relay.syncBatch();
  t.equal((await db.query("select 1 from outbox where state = 'dead'")).length, 0, "a vanished collection kills nothing");
  await db.query("update outbox set next_attempt_at = now()");
  await relay.syncBatch();
  t.same(qdrantPoints(fake), new Map([[id, sha256("two")]]));
});

t.test("a new write to a dead key makes it pending again", async (t) => {
  const { db, fake } = await setup(t);
  const documentId = await insertDocument(db);
  const id = randomUUID();
  await putChunk(db, documentId, id, "bad", [1]);
  await (await relayFor(db, fake)).syncBatch();
  t.equal((await db.query("select 1 from outbox where state = 'dead'")).length, 1);
  await putChunk(db, documentId, id, "fixed");
  await (await relayFor(db, fake)).syncBatch();
  t.same(qdrantPoints(fake), new Map([[id, sha256("fixed")]]));
});

t.test("notifications wake the relay: a commit reaches Qdrant long before the poll interval", async (t) => {
  const { db, fake } = await setup(t);
  const relay = await relayFor(db, fake, { pollIntervalMs: 60_000 });
  await relay.start();
  t.teardown(() => relay.stop());
  await new Promise<void>((resolve) => relay.once("idle", () => resolve()));
  const documentId = await insertDocument(db);
  const id = randomUUID();
  await putChunk(db, documentId, id, "wake up");
  await waitFor("the point to appear", async () => qdrantPoints(fake).has(id), { timeoutMs: 10_000 });
  t.pass("synced without waiting for the 60 s poll");
});

t.test("enqueueing inside a rolled-back transaction leaves no change", async (t) => {
  const { db } = await setup(t);
  await t.rejects(
    db.appPool.transaction(async (tx) => {
      await enqueuePointChanges(tx, COLLECTION, [randomUUID()]);
      throw new Error("rolled back");
    }),
  );
  t.equal((await db.query("select 1 from outbox")).length, 0);
});

t.test("a Qdrant older than 1.16 (no conditional updates) is refused at start with one line", async (t) => {
  const { db, fake } = await setup(t);
  fake.version = "1.15.4";
  const relay = await relayFor(db, fake);
  await t.rejects(relay.prepareCollections(), { name: "ConfigError", message: "Qdrant 1.15.4 is too old: pgconverge needs 1.16.0 or later (conditional updates, update_filter)" });
  fake.version = "1.16.0";
  t.equal(await relay.prepareCollections(), true);
  // A proxy in front of Qdrant that refuses GET / does not stop the relay: the version is unknown.
  const behindProxy = await relayFor(db, fake);
  fake.faults.next({ kind: "status", status: 404, message: "Not found" });
  t.equal(await behindProxy.prepareCollections(), true);
});
