import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import t, { type Test } from "tap";

type Tap = Test;
import { createQdrantClient, ensureCollection } from "../../src/outbox/qdrant.ts";
import { reconcile } from "../../src/outbox/reconciler.ts";
import { CHUNK_SYNC, COLLECTION, DIMENSIONS, insertDocument, ownerOf, pendingOutbox, postgresPoints, putChunk, qdrantPoints, relayFor } from "../helpers/chunks.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { FakeQdrant } from "../servers/qdrant.ts";

const CLI = fileURLToPath(new URL("../../bin/pgconverge.js", import.meta.url));

async function converged(t: Tap) {
  const db = await createTestDatabase(t);
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  const qdrant = await createQdrantClient({ url: fake.url, timeoutMs: 2_000 });
  await ensureCollection(qdrant, { name: COLLECTION, size: DIMENSIONS, distance: "Cosine" });
  const documentId = await insertDocument(db);
  const ids = Array.from({ length: 25 }, () => randomUUID());
  for (const id of ids) await putChunk(db, documentId, id, `text ${id}`);
  const relay = await relayFor(db, fake);
  while ((await pendingOutbox(db)) > 0) await relay.syncBatch();
  t.same(qdrantPoints(fake), await postgresPoints(db), "in sync before the tampering");
  return { db, fake, qdrant, relay, ids };
}

t.test("points deleted, altered or added behind the project's back are found, and --repair fixes them", async (t) => {
  const { db, fake, qdrant, relay, ids } = await converged(t);
  const points = fake.collections.get(COLLECTION)!.points;
  points.delete(`u:${ids[0]}`);
  points.delete(`u:${ids[1]}`);
  points.get(`u:${ids[2]}`)!.payload.content_sha256 = "0".repeat(64);
  // Points carrying this database's owner with no row (a UUID and an integer id), and one without any owner.
  const owner = await ownerOf(db);
  const unowned = randomUUID();
  await qdrant.upsert(COLLECTION, {
    wait: true,
    points: [
      { id: randomUUID(), vector: [1, 1, 1, 1], payload: { content_sha256: "x", pgconverge_owner: owner } },
      { id: 42, vector: [1, 0, 0, 0], payload: { pgconverge_owner: owner } },
      { id: unowned, vector: [0, 1, 0, 0], payload: { content_sha256: "y" } },
    ],
  });

  const found = await reconcile({ pool: db.appPool, qdrant, sync: CHUNK_SYNC, repair: false, pageSize: 7 });
  t.match(found, { missing: 2, extra: 2, stale: 1, unowned: 1, qdrantPoints: 25, postgresPoints: 25, repaired: false });
  t.equal(await pendingOutbox(db), 0, "without --repair nothing is queued");

  const repaired = await reconcile({ pool: db.appPool, qdrant, sync: CHUNK_SYNC, repair: true, pageSize: 7 });
  t.match(repaired, { missing: 2, extra: 2, stale: 1, unowned: 1 });
  while ((await pendingOutbox(db)) > 0) await relay.syncBatch();
  t.ok(points.has(`u:${unowned}`), "the point with no owner is not deleted");
  points.delete(`u:${unowned}`);
  t.same(qdrantPoints(fake), await postgresPoints(db), "converged after the relay ran");
  t.match(await reconcile({ pool: db.appPool, qdrant, sync: CHUNK_SYNC, repair: false }), { missing: 0, extra: 0, stale: 0 });
});

t.test("a deleted collection is all drift, and --repair rebuilds it from Postgres without re-embedding", async (t) => {
  const { db, fake, qdrant, relay } = await converged(t);
  await qdrant.deleteCollection(COLLECTION);
  t.match(await reconcile({ pool: db.appPool, qdrant, sync: CHUNK_SYNC, repair: true }), { missing: 25, extra: 0, stale: 0, qdrantPoints: 0, postgresPoints: 25 });
  while ((await pendingOutbox(db)) > 0) await relay.syncBatch();
  t.same(qdrantPoints(fake), await postgresPoints(db), "the relay recreated the collection and wrote every point again");
});

t.test("differences whose fix is already in the outbox count as in flight, not drift", async (t) => {
  const { db, qdrant, ids } = await converged(t);
  await putChunk(db, (await db.query<{ document_id: string }>("select document_id from chunks limit 1"))[0]!.document_id, ids[0]!, "edited, not yet synced");
  const report = await reconcile({ pool: db.appPool, qdrant, sync: CHUNK_SYNC, repair: false });
  t.match(report, { missing: 0, extra: 0, stale: 0, inFlight: 1 });
});

t.test("pgconverge reconcile --repair --json reports the counts, and the worker's relay converges", async (t) => {
  const { db, fake, ids } = await converged(t);
  fake.collections.get(COLLECTION)!.points.delete(`u:${ids[3]}`);
  const env = { ...process.env, DATABASE_URL: db.url, QDRANT_URL: fake.url, QDRANT_COLLECTION: COLLECTION, EMBED_DIMENSIONS: String(DIMENSIONS), LOG_LEVEL: "warn" };
  const run = (args: string[]) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      // Asynchronous: the fake Qdrant lives in this process and must keep answering.
      import("node:child_process").then(({ execFile }) =>
        execFile(process.execPath, [CLI, ...args], { env }, (error, stdout, stderr) =>
          resolve({ status: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        ),
      );
    });
  const result = await run(["reconcile", "--repair", "--json"]);
  t.equal(result.status, 0, result.stderr);
  t.match(JSON.parse(result.stdout), { collection: COLLECTION, missing: 1, extra: 0, stale: 0, repaired: true });
  t.equal(await pendingOutbox(db), 1);
  const [run1] = await db.query<{ missing: string }>("select missing from reconcile_runs");
  t.equal(Number(run1?.missing), 1, "the run is recorded for status");
  const relay = await relayFor(db, fake);
  await relay.start();
  t.teardown(() => relay.stop());
  await waitFor("the repair to land", async () => (await pendingOutbox(db)) === 0);
  t.same(qdrantPoints(fake), await postgresPoints(db));
});

t.test("pgconverge outbox list shows dead changes with their reason; outbox retry puts them back", async (t) => {
  const { db, fake } = await converged(t);
  const documentId = (await db.query<{ document_id: string }>("select document_id from chunks limit 1"))[0]!.document_id;
  const bad = randomUUID();
  await putChunk(db, documentId, bad, "wrong size", [1, 2]);
  await (await relayFor(db, fake)).syncBatch();
  const env = { ...process.env, DATABASE_URL: db.url, QDRANT_URL: fake.url, QDRANT_COLLECTION: COLLECTION, EMBED_DIMENSIONS: String(DIMENSIONS), LOG_LEVEL: "warn" };
  const { execFile } = await import("node:child_process");
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [CLI, ...args], { env }, (error, stdout, stderr) =>
        resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ),
    );
  const listed = await run(["outbox", "list", "--dead", "--json"]);
  t.equal(listed.code, 0, listed.stderr);
  const rows = JSON.parse(listed.stdout) as Array<{ id: string; point_id: string; state: string; last_error: string }>;
  t.match(rows, [{ point_id: bad, state: "dead", last_error: /vector has 2 dimensions/ }]);
  const human = await run(["outbox", "list"]);
  t.match(human.stdout, /^id\s+state\s+point\s+attempts\s+age\s+next try\s+last error\n/);
  t.match(human.stdout, /dead\s+[0-9a-f-]{36}\s+1\s+/);

  t.equal((await run(["outbox", "retry"])).code, 2, "ids or --all are required");
  t.equal((await run(["outbox", "retry", "abc"])).code, 2);
  const retried = await run(["outbox", "retry", rows[0]!.id]);
  t.equal(retried.code, 0, retried.stderr);
  t.match(retried.stdout, /^1 dead change put back in line for the relay\n$/);
  t.same(await db.query("select state from outbox"), [{ state: "pending" }]);
});

t.test("a point without a version stamp is stale, and a repair stamps it", async (t) => {
  const { db, fake, qdrant, relay, ids } = await converged(t);
  const points = fake.collections.get(COLLECTION)!.points;
  delete points.get(`u:${ids[0]}`)!.payload.pgconverge_version;
  t.match(await reconcile({ pool: db.appPool, qdrant, sync: CHUNK_SYNC, repair: true }), { missing: 0, extra: 0, stale: 1 });
  while ((await pendingOutbox(db)) > 0) await relay.syncBatch();
  t.ok(Number.isSafeInteger(points.get(`u:${ids[0]}`)!.payload.pgconverge_version), "stamped again");
  t.match(await reconcile({ pool: db.appPool, qdrant, sync: CHUNK_SYNC, repair: false }), { stale: 0 });
  t.equal(fake.queries.get("POST /collections/{name}/points/scroll")?.get("consistency"), "majority", "the reconciler reads with majority consistency by default");
});

t.test("a stamp this database never issued (restored to an earlier time) moves its sequence on, so repairs land", async (t) => {
  const { db, fake, qdrant, relay, ids } = await converged(t);
  const point = fake.collections.get(COLLECTION)!.points.get(`u:${ids[0]}`)!;
  const future = 10_000_000_000;
  point.payload.pgconverge_version = future;
  point.payload.content_sha256 = "0".repeat(64);
  t.match(await reconcile({ pool: db.appPool, qdrant, sync: CHUNK_SYNC, repair: false }), { stale: 1 });
  const [before] = await db.query<{ last: string }>("select last_value::text as last from outbox_id_seq");
  t.ok(Number(before!.last) < future, "a look without --repair changes nothing");
  await reconcile({ pool: db.appPool, qdrant, sync: CHUNK_SYNC, repair: true });
  while ((await pendingOutbox(db)) > 0) await relay.syncBatch();
  t.same(qdrantPoints(fake), await postgresPoints(db), "the repair was not refused as older");
  const rewritten = fake.collections.get(COLLECTION)!.points.get(`u:${ids[0]}`)!;
  t.ok((rewritten.payload.pgconverge_version as number) > future, "written with a stamp past the one found");
});
