// The relay's writes over Qdrant's gRPC API (QDRANT_GRPC_URL): the same points, payloads,
// conditional writes and failure handling as over REST, against the gRPC front of the Qdrant
// test server (the official @qdrant/js-client-grpc on one side, its own service definition on
// the other).
import { randomUUID } from "node:crypto";
import t from "tap";
import { runWorker } from "../../src/index.ts";
import { enqueuePointChanges } from "../../src/outbox/outbox.ts";
import { createQdrantClient, ensureCollection, olderThan, restPointWrites } from "../../src/outbox/qdrant.ts";
import { createGrpcPointWrites } from "../../src/outbox/qdrantGrpc.ts";
import { defineSync, type PointId } from "../../src/outbox/sync.ts";
import { CHUNK_SYNC, COLLECTION, contractPayload, DIMENSIONS, deleteChunk, insertDocument, pendingOutbox, postgresPoints, putChunk, qdrantPoints, relayFor, sha256, vectorFor } from "../helpers/chunks.ts";
import { createTestDatabase, PIPELINE_MIGRATIONS, testLog, waitFor } from "../helpers/db.ts";
import { FakeQdrantGrpc, startQdrantWithGrpc } from "../servers/qdrantGrpc.ts";

async function setup(t: Parameters<typeof createTestDatabase>[0]) {
  const db = await createTestDatabase(t);
  const { fake, grpc } = await startQdrantWithGrpc(t);
  await ensureCollection(await createQdrantClient({ url: fake.url, timeoutMs: 2_000 }), { name: COLLECTION, size: DIMENSIONS, distance: "Cosine" });
  const points = await createGrpcPointWrites(grpc.url, { timeoutMs: 2_000 });
  t.teardown(() => points.close?.());
  return { db, fake, grpc, points };
}

const drained = (db: Awaited<ReturnType<typeof createTestDatabase>>) => waitFor("the outbox to drain", async () => (await pendingOutbox(db)) === 0, { timeoutMs: 30_000 });

t.test("writes, updates and deletes go over gRPC with the payload the data contract names, ordered", async (t) => {
  const { db, fake, grpc, points } = await setup(t);
  const relay = await relayFor(db, fake, { points });
  await relay.start();
  t.teardown(() => relay.stop());
  const documentId = await insertDocument(db, "docs/a.md");
  const [a, b] = [randomUUID(), randomUUID()];
  await putChunk(db, documentId, a, "alpha");
  await putChunk(db, documentId, b, "beta");
  await drained(db);
  const point = fake.points(COLLECTION).find((p) => p.id === a);
  const stamp = point?.payload.pgconverge_version;
  t.ok(Number.isSafeInteger(stamp) && (stamp as number) > 0, "the version stamp, an integer");
  t.same(point?.payload, await contractPayload(db, { documentId, source: "docs/a.md", content: "alpha" }, stamp));
  t.same(point?.vector, vectorFor("alpha").map(Math.fround), "the vector, at float32 as Qdrant stores it");
  t.equal(fake.queries.get("PUT /collections/{name}/points")?.get("ordering"), "medium");
  await putChunk(db, documentId, a, "alpha, edited");
  await deleteChunk(db, b);
  await drained(db);
  t.same(qdrantPoints(fake), new Map([[a, sha256("alpha, edited")]]));
  t.ok((grpc.calls.get("Upsert") ?? 0) >= 2 && grpc.calls.get("Delete") === 1, "the writes went over gRPC");
  t.equal(fake.requests.get("PUT /collections/{name}/points"), grpc.calls.get("Upsert"), "and none over REST");
});

t.test("a write with a smaller stamp neither replaces nor deletes the stored point", async (t) => {
  const { fake, points } = await setup(t);
  const id = randomUUID();
  const write = (stamp: number, vector: number[]) =>
    points.upsert(COLLECTION, { wait: true, ordering: "medium", points: [{ id, vector, payload: { pgconverge_owner: "me", pgconverge_version: stamp } }], update_filter: olderThan("me", [{ id, stamp }]) });
  await write(7, [1, 0, 0, 0]);
  await write(6, [0, 1, 0, 0]);
  t.same(fake.points(COLLECTION)[0]?.vector, [1, 0, 0, 0], "the older upsert was refused by its update_filter");
  await points.delete(COLLECTION, { wait: true, ordering: "medium", filter: { must: [{ has_id: [id] }, olderThan("me", [{ id, stamp: 5 }])] } });
  t.equal(fake.points(COLLECTION).length, 1, "the older delete matched nothing");
  await points.delete(COLLECTION, { wait: true, ordering: "strong", filter: { must: [{ has_id: [id] }, olderThan("me", [{ id, stamp: 8 }])] } });
  t.equal(fake.points(COLLECTION).length, 0, "a newer delete removed it");
  t.equal(fake.queries.get("POST /collections/{name}/points/delete")?.get("ordering"), "strong");
});

t.test("a refused point is found in its batch and dead with Qdrant's reason; the others land", async (t) => {
  const { db, fake, points } = await setup(t);
  const documentId = await insertDocument(db);
  const ids = [randomUUID(), randomUUID(), randomUUID()];
  for (const id of ids) await putChunk(db, documentId, id, `text ${id}`);
  const relay = await relayFor(db, fake, { points });
  await relay.prepareCollections();
  // The batch, then its first point alone, are refused; the other two go through one by one.
  fake.faults.next({ kind: "status", status: 400, message: "Wrong input: bad point" }, 2);
  const report = await relay.syncBatch();
  t.match(report, { claimed: 3, synced: 2, dead: 1 });
  const dead = await db.query<{ last_error: string }>("select last_error from outbox where state = 'dead'");
  t.same(dead, [{ last_error: "Qdrant 400: Wrong input: bad point" }]);
  t.equal(fake.points(COLLECTION).length, 2);
});

t.test("429 with its Retry-After, a reset, a shard being moved and a closed port are retried; nothing dies", async (t) => {
  const { db, fake, grpc, points } = await setup(t);
  const documentId = await insertDocument(db);
  await putChunk(db, documentId, randomUUID(), "x");
  const relay = await relayFor(db, fake, { points });
  await relay.prepareCollections();
  const next = () => db.query<{ wait_s: number; last_error: string; state: string }>("select extract(epoch from next_attempt_at - updated_at)::float8 as wait_s, last_error, state from outbox");
  fake.faults.next({ kind: "status", status: 429, retryAfterSeconds: 30, message: "Too many requests" });
  t.match(await relay.syncBatch(), { retried: 1, dead: 0 });
  const [limited] = await next();
  t.ok(limited!.wait_s >= 29.9, `next attempt ${limited!.wait_s.toFixed(2)} s later, as Retry-After: 30 asked`);
  t.equal(limited!.last_error, "Qdrant 429: Too many requests");
  const failures = [
    { fault: { kind: "reset" } as const, reason: /^Qdrant unreachable: .*ECONNRESET/ },
    // Qdrant's gRPC code for "no target shard" during a shard transfer (a 500 over REST).
    { fault: { kind: "status", status: 500, grpcCode: 9, message: "Service internal error: No target shard 0 found for update" } as const, reason: /^Qdrant 500: .*No target shard/ },
  ];
  for (const { fault, reason } of failures) {
    await db.query("update outbox set next_attempt_at = now()");
    fake.faults.next(fault);
    t.match(await relay.syncBatch(), { retried: 1, dead: 0 }, `${fault.kind} ${"grpcCode" in fault ? fault.grpcCode : ""}: transient, even for a batch of one`);
    t.match((await next())[0], { state: "pending", last_error: reason });
  }

  await grpc.stop();
  await db.query("update outbox set next_attempt_at = now()");
  t.match(await relay.syncBatch(), { retried: 1, dead: 0 }, "transient while the gRPC port is closed");
  await grpc.start();
  await db.query("update outbox set next_attempt_at = now()");
  t.match(await relay.syncBatch(), { synced: 1 });
  t.same(qdrantPoints(fake), await postgresPoints(db));
});

t.test("a payload is stored as REST stores it, whatever JSON makes of its values", async (t) => {
  const { fake, grpc } = await setup(t);
  const client = await createQdrantClient({ url: fake.url, timeoutMs: 2_000 });
  const overRest = restPointWrites(client);
  const overGrpc = await createGrpcPointWrites(grpc.url, { apiKey: "grpc-key", timeoutMs: 2_000 });
  t.teardown(() => overGrpc.close?.());
  const payload = {
    when: new Date("2026-12-03T04:00:00Z"),
    absent: undefined,
    nan: Number.NaN,
    infinite: Number.POSITIVE_INFINITY,
    integer: 7,
    double: 0.5,
    huge: 2 ** 60,
    // Node.js 20 has no JSON.rawJSON: neither way can print a BigInt there.
    ...("rawJSON" in JSON ? { big: 2n ** 60n } : {}),
    nested: { list: [1, "two", null, { deep: true }], gone: undefined },
  };
  // A flat payload of strings and numbers, as most are, takes a shorter way on gRPC.
  const flat = { text: "x", integer: 3, double: 0.25, negativeZero: -0, yes: true, nothing: null };
  const write = (writes: typeof overRest, id: string, sent: Record<string, unknown>) =>
    writes.upsert(COLLECTION, { wait: true, ordering: "medium", points: [{ id, vector: [1, 0, 0, 0], payload: sent }], update_filter: olderThan("me", []) });
  const stored = (id: string) => fake.points(COLLECTION).find((point) => point.id === id)?.payload;
  for (const sent of [payload, flat]) {
    const [rest, grpcId] = [randomUUID(), randomUUID()];
    await write(overRest, rest, sent);
    await write(overGrpc, grpcId, sent);
    t.same(stored(grpcId), stored(rest), `the same payload: ${JSON.stringify(stored(rest), (_key, value: unknown) => (typeof value === "bigint" ? String(value) : value))}`);
  }
  t.same([...grpc.apiKeys], ["grpc-key"], "the API key went as the api-key header");
});

t.test("the version check over gRPC: an old Qdrant, and a server that is not Qdrant's gRPC API, are one line each", async (t) => {
  const { fake, points } = await setup(t);
  fake.version = "1.15.3";
  await t.rejects(points.check!(), { name: "ConfigError", message: "Qdrant 1.15.3 over gRPC is too old: pgconverge needs 1.16.0 or later (conditional updates, update_filter)" });
  fake.version = "1.20.0";
  await points.check!();
  const elsewhere = new FakeQdrantGrpc(fake, { healthCheck: false });
  await elsewhere.start();
  t.teardown(() => elsewhere.stop());
  const wrong = await createGrpcPointWrites(elsewhere.url, { timeoutMs: 2_000 });
  t.teardown(() => wrong.close?.());
  await t.rejects(wrong.check!(), { name: "ConfigError", message: /^QDRANT_GRPC_URL does not serve Qdrant's gRPC API \(.*\); it is Qdrant's gRPC port, 6334 by default$/ });
});

t.test("a vector with NaN, Infinity or a value beyond float32 is dead before any write, over gRPC as over REST", async (t) => {
  const { db, fake, grpc, points } = await setup(t);
  const [good, nan, huge] = [randomUUID(), randomUUID(), randomUUID()];
  const vectors = new Map<PointId, number[]>([
    [good, [1, 0, 0, 0]],
    [nan, [0, Number.NaN, 0, 0]],
    [huge, [0, 0, 1e39, 0]],
  ]);
  const sync = defineSync({
    collection: COLLECTION,
    vectors: { size: DIMENSIONS },
    load: async (_db, ids) => new Map(ids.map((id) => [id, { vector: vectors.get(id)!, payload: {}, hash: "h" }])),
    page: async () => [],
  });
  const client = await createQdrantClient({ url: fake.url, timeoutMs: 2_000 });
  for (const writes of [points, restPointWrites(client)]) {
    await db.query("delete from outbox");
    await enqueuePointChanges(db.appPool, COLLECTION, [...vectors.keys()]);
    t.match(await (await relayFor(db, fake, { syncs: [sync], points: writes })).syncBatch(), { synced: 1, dead: 2 });
    const dead = await db.query<{ point_id: string; last_error: string }>("select point_id, last_error from outbox where state = 'dead' order by last_error");
    t.same(dead, [
      { point_id: huge, last_error: "vector value 1e+39 at index 2 is not a finite float32" },
      { point_id: nan, last_error: "vector value NaN at index 1 is not a finite float32" },
    ]);
  }
  t.same([...qdrantPoints(fake).keys()], [good]);
  t.equal(grpc.calls.get("Upsert"), 1, "one write over gRPC, with the good point only");
});

t.test("runWorker's qdrant.grpcUrl sends the relay's writes over gRPC; a bad one is one line", async (t) => {
  const { db, fake, grpc } = await setup(t);
  await t.rejects(runWorker({ databaseUrl: db.url, tasks: {}, syncs: [CHUNK_SYNC], qdrant: { url: fake.url, grpcUrl: "localhost:6334" }, logger: testLog }), {
    name: "ConfigError",
    message: /^qdrant\.grpcUrl: .*http/,
  });
  const worker = await runWorker({ databaseUrl: db.url, tasks: {}, syncs: [CHUNK_SYNC], qdrant: { url: fake.url, grpcUrl: grpc.url }, appMigrations: PIPELINE_MIGRATIONS, logger: testLog });
  t.teardown(() => worker.stop());
  const documentId = await insertDocument(db);
  const id = randomUUID();
  await putChunk(db, documentId, id, "over grpc");
  await drained(db);
  t.same(qdrantPoints(fake), new Map([[id, sha256("over grpc")]]));
  t.equal(grpc.calls.get("Upsert"), 1);
});
