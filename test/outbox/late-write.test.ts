// A write that lands late (its relay's lease expired while the request was in flight, or a
// replica applied it after a newer one) must not bring back an older state. Two relays race on
// one key; the test server holds the older write until the newer one is in, then lets it land.
// Qdrant must end with the newer state by itself: no reconcile runs here.
import { randomUUID } from "node:crypto";
import t, { type Test } from "tap";
import { createQdrantClient, ensureCollection } from "../../src/outbox/qdrant.ts";
import { COLLECTION, DIMENSIONS, deleteChunk, insertDocument, pendingOutbox, putChunk, qdrantPoints, relayFor, sha256 } from "../helpers/chunks.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { FakeQdrant } from "../servers/qdrant.ts";
import type { Relay } from "../../src/outbox/relay.ts";

const LEASE_MS = 300;

async function setup(t: Test) {
  const db = await createTestDatabase(t);
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  await ensureCollection(await createQdrantClient({ url: fake.url, timeoutMs: 2_000 }), { name: COLLECTION, size: DIMENSIONS, distance: "Cosine" });
  // A short lease and a long request deadline: the held request outlives its lease.
  const relay = async () => relayFor(db, fake, { leaseMs: LEASE_MS, qdrant: await createQdrantClient({ url: fake.url, timeoutMs: 30_000 }) });
  const [a, b] = [await relay(), await relay()];
  await a.prepareCollections();
  await b.prepareCollections();
  return { db, fake, a, b };
}

/** Starts a sync pass of `relay` whose Qdrant write the test server holds; resolves once it is held. */
async function heldPass(t: Test, fake: FakeQdrant, relay: Relay) {
  const hold = fake.faults.hold();
  t.teardown(hold.release);
  const pass = relay.syncBatch();
  await hold.arrived;
  return { pass, release: hold.release };
}

/** The other relay takes the key over once the first one's lease has expired. */
async function takeOver(relay: Relay) {
  await waitFor("the second relay to sync the key after the lease expired", async () => (await relay.syncBatch()).synced === 1, { timeoutMs: 10_000 });
}

t.test("an upsert of an older state that lands after a newer one changes nothing", async (t) => {
  const { db, fake, a, b } = await setup(t);
  const documentId = await insertDocument(db);
  const id = randomUUID();
  await putChunk(db, documentId, id, "old");
  const late = await heldPass(t, fake, a);
  await putChunk(db, documentId, id, "new");
  await takeOver(b);
  t.same(qdrantPoints(fake), new Map([[id, sha256("new")]]), "the newer state is in");
  late.release();
  const report = await late.pass;
  t.same(qdrantPoints(fake), new Map([[id, sha256("new")]]), "the late write of the older state was refused by Qdrant");
  t.equal(report.synced, 0, "the relay that lost its lease acknowledged nothing");
  t.equal(fake.queries.get("PUT /collections/{name}/points")?.get("ordering"), "medium", "writes ask for medium ordering by default");
  // The relay that lost its lease queued the key again; syncing it changes nothing.
  await b.syncBatch();
  t.equal(await pendingOutbox(db), 0);
  t.same(qdrantPoints(fake), new Map([[id, sha256("new")]]));
});

t.test("a delete that lands after the point was written again does not remove it", async (t) => {
  const { db, fake, a, b } = await setup(t);
  const documentId = await insertDocument(db);
  const id = randomUUID();
  await putChunk(db, documentId, id, "first");
  await b.syncBatch();
  await deleteChunk(db, id);
  const late = await heldPass(t, fake, a);
  await putChunk(db, documentId, id, "again");
  await takeOver(b);
  late.release();
  await late.pass;
  t.same(qdrantPoints(fake), new Map([[id, sha256("again")]]), "the late delete did not remove the newer point");
  t.equal(await pendingOutbox(db), 0);
});

t.test("an upsert that lands after the point's delete re-creates it; the next pass deletes it again", async (t) => {
  // Qdrant keeps no tombstone and inserts a missing point whatever update_filter says, so the
  // stamp cannot refuse this write; the relay that lost its lease queues the key again instead.
  const { db, fake, a, b } = await setup(t);
  const documentId = await insertDocument(db);
  const id = randomUUID();
  await putChunk(db, documentId, id, "doomed");
  const late = await heldPass(t, fake, a);
  await deleteChunk(db, id);
  await takeOver(b);
  t.same(qdrantPoints(fake), new Map(), "deleted");
  late.release();
  await late.pass;
  t.same(qdrantPoints(fake), new Map([[id, sha256("doomed")]]), "the late upsert re-created the point");
  t.equal(await pendingOutbox(db), 1, "and its key is queued again");
  await b.syncBatch();
  t.same(qdrantPoints(fake), new Map(), "the next pass deletes it, with a newer stamp");
  t.equal(await pendingOutbox(db), 0);
});
