// Two databases share one Qdrant and the default collection name: each reconcile looks only at
// its own points (the owner id in every payload), so `reconcile --repair` on one never deletes
// the other's points as "extra".
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import t, { type Test } from "tap";
import { COLLECTION, DIMENSIONS, insertDocument, pendingOutbox, postgresPoints, putChunk, relayFor } from "../helpers/chunks.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { FakeQdrant } from "../servers/qdrant.ts";

const CLI = fileURLToPath(new URL("../../bin/pgconverge.js", import.meta.url));

/** The CLI, asynchronously: the Qdrant test server lives in this process and must keep answering. */
function cli(db: TestDatabase, fake: FakeQdrant, args: string[]) {
  const env = { ...process.env, DATABASE_URL: db.url, QDRANT_URL: fake.url, QDRANT_COLLECTION: COLLECTION, EMBED_DIMENSIONS: String(DIMENSIONS), LOG_LEVEL: "warn" };
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, [CLI, ...args], { env }, (error, stdout, stderr) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );
}

async function convergedDatabase(t: Test, fake: FakeQdrant, chunks: number) {
  const db = await createTestDatabase(t);
  const documentId = await insertDocument(db);
  for (let i = 0; i < chunks; i++) await putChunk(db, documentId, randomUUID(), `text ${i} of ${db.url}`);
  const relay = await relayFor(db, fake);
  while ((await pendingOutbox(db)) > 0) await relay.syncBatch();
  return { db, relay };
}

/** Qdrant's points of one database's chunks: id -> content_sha256, only ids that database has. */
function pointsOf(fake: FakeQdrant, ids: Iterable<string>): Map<string, string> {
  const wanted = new Set(ids);
  return new Map(fake.points(COLLECTION).filter((point) => wanted.has(String(point.id))).map((point) => [String(point.id), String(point.payload.content_sha256)]));
}

t.test("reconcile --repair on one database leaves the other database's points in a shared collection alone", async (t) => {
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  const a = await convergedDatabase(t, fake, 12);
  const b = await convergedDatabase(t, fake, 9);
  const bPoints = await postgresPoints(b.db);
  t.equal(fake.points(COLLECTION).length, 21, "both databases' points share the collection");

  const repaired = await cli(a.db, fake, ["reconcile", "--repair", "--json"]);
  t.equal(repaired.code, 0, repaired.stderr);
  t.match(JSON.parse(repaired.stdout), { collection: COLLECTION, missing: 0, extra: 0, stale: 0, qdrantPoints: 12, postgresPoints: 12 }, "no drift: the other's points are not its own");
  t.equal(await pendingOutbox(a.db), 0, "nothing queued");
  while ((await pendingOutbox(a.db)) > 0) await a.relay.syncBatch();
  t.same(pointsOf(fake, bPoints.keys()), bPoints, "the other database's points are untouched");
  t.same(pointsOf(fake, (await postgresPoints(a.db)).keys()), await postgresPoints(a.db));

  // The hash check still finds tampering with its own points, and only its own.
  const [own] = (await postgresPoints(a.db)).keys();
  const [theirs] = bPoints.keys();
  const stored = fake.collections.get(COLLECTION)!.points;
  stored.get(`u:${own}`)!.payload.content_sha256 = "0".repeat(64);
  stored.get(`u:${theirs}`)!.payload.content_sha256 = "1".repeat(64);
  const found = await cli(a.db, fake, ["reconcile", "--repair", "--json"]);
  t.equal(found.code, 0, found.stderr);
  t.match(JSON.parse(found.stdout), { missing: 0, extra: 0, stale: 1 });
  while ((await pendingOutbox(a.db)) > 0) await a.relay.syncBatch();
  t.same(pointsOf(fake, (await postgresPoints(a.db)).keys()), await postgresPoints(a.db), "its own tampered point repaired");
  t.equal(stored.get(`u:${theirs}`)!.payload.content_sha256, "1".repeat(64), "the other's point is not its to repair");
  t.equal(fake.points(COLLECTION).length, 21);
});

t.test("points written before owners existed are counted, never deleted, and a repair adopts those with a row", async (t) => {
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  const a = await convergedDatabase(t, fake, 6);
  const stored = fake.collections.get(COLLECTION)!.points;
  // As the earlier version wrote them: no owner, no hash key; plus a leftover point with no row anywhere.
  for (const point of stored.values()) {
    delete point.payload.pgconverge_owner;
    delete point.payload.pgconverge_hash;
  }
  const leftover = randomUUID();
  stored.set(`u:${leftover}`, { id: leftover, vector: [1, 0, 0, 0], payload: { content_sha256: "0".repeat(64) }, writtenAt: Date.now() });

  const found = await cli(a.db, fake, ["reconcile"]);
  t.equal(found.code, 0, found.stderr);
  t.match(found.stdout, /^collection chunks: missing 6, extra 0, stale 0 \(0 points of this database in Qdrant, 6 rows in Postgres\); run with --repair to fix; 7 points without an owner/);
  const repaired = await cli(a.db, fake, ["reconcile", "--repair", "--json"]);
  t.match(JSON.parse(repaired.stdout), { missing: 6, extra: 0, unowned: 7, repaired: true });
  while ((await pendingOutbox(a.db)) > 0) await a.relay.syncBatch();
  t.same(pointsOf(fake, (await postgresPoints(a.db)).keys()), await postgresPoints(a.db), "its rows' points re-written");
  t.ok(stored.has(`u:${leftover}`), "the unowned point with no row is left alone");
  const after = await cli(a.db, fake, ["reconcile", "--json"]);
  t.match(JSON.parse(after.stdout), { missing: 0, extra: 0, stale: 0, unowned: 1, qdrantPoints: 6 }, "adopted: only the leftover is unowned");
});
