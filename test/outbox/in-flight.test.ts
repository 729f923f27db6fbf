import { randomUUID } from "node:crypto";
import t from "tap";
import { createQdrantClient, ensureCollection } from "../../src/outbox/qdrant.ts";
import { COLLECTION, DIMENSIONS, insertDocument, pendingOutbox, postgresPoints, putChunk, qdrantPoints, relayFor, sha256 } from "../helpers/chunks.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { FakeQdrant } from "../servers/qdrant.ts";

t.test("batches in flight finish in any order; each row is acknowledged only after its own write", async (t) => {
  const db = await createTestDatabase(t);
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  await ensureCollection(await createQdrantClient({ url: fake.url, timeoutMs: 2_000 }), { name: COLLECTION, size: DIMENSIONS, distance: "Cosine" });
  const documentId = await insertDocument(db);
  const ids = Array.from({ length: 12 }, () => randomUUID());
  for (const id of ids) await putChunk(db, documentId, id, `first ${id}`);
  const relay = await relayFor(db, fake, { batchSize: 4, inFlight: 3, leaseMs: 30_000 });
  await relay.prepareCollections();

  // The first batch's upsert is held in the server; the two batches claimed after it finish first.
  const held = fake.faults.hold();
  await relay.start();
  t.teardown(() => relay.stop());
  await held.arrived;
  await waitFor("the two later batches to be acknowledged", async () => (await pendingOutbox(db)) === 4, { timeoutMs: 10_000 });
  const heldIds = ids.filter((id) => !qdrantPoints(fake).has(id));
  t.equal(heldIds.length, 4, "the held batch's points are not in Qdrant yet");
  const [{ count }] = (await db.query<{ count: string }>("select count(*) from outbox where point_id = any($1)", [heldIds])) as [{ count: string }];
  t.equal(Number(count), 4, "and their outbox rows are still there");

  // One of the held keys changes while its write is in flight: that row must not be acknowledged.
  await putChunk(db, documentId, heldIds[0]!, "second");
  held.release();
  await waitFor("the outbox to drain", async () => (await pendingOutbox(db)) === 0, { timeoutMs: 10_000 });
  t.same(qdrantPoints(fake), await postgresPoints(db), "Qdrant holds exactly what Postgres holds");
  t.equal(qdrantPoints(fake).get(heldIds[0]!), sha256("second"), "the change made during the held write was synced after it");
});
