// The reference pipeline through its tasks: documents become chunks, chunks become vectors,
// vectors reach Qdrant; edits re-embed only what changed, deletes remove points, search reads
// back from Postgres.
import t from "tap";
import { addJob } from "../../src/runtime/queries.ts";
import { search } from "../../pipeline/search.ts";
import { createQdrantClient } from "../../src/outbox/qdrant.ts";
import { COLLECTION, qdrantPoints } from "../helpers/chunks.ts";
import { createTestDatabase } from "../helpers/db.ts";
import { converged, ingest, startPipeline, startServers, waitConverged } from "../helpers/pipeline.ts";

const paragraph = (topic: string, n = 6) =>
  Array.from({ length: n }, (_, i) => `The ${topic} sentence number ${i} talks about ${topic} and nothing else.`).join(" ");

/** A document of several paragraphs, long enough to make several chunks. */
const documentOf = (...topics: string[]) => topics.map((topic) => paragraph(topic, 12)).join("\n\n");

async function chunkRows(db: Awaited<ReturnType<typeof createTestDatabase>>, documentId: string) {
  return db.query<{ id: string; chunk_index: number; embedded_at: Date }>(
    "select id, chunk_index, embedded_at from chunks where document_id = $1 order by chunk_index",
    [documentId],
  );
}

t.test("ingested documents are chunked, embedded and mirrored into Qdrant", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  await startPipeline(t, db, servers);
  const first = await ingest(db, "/docs/databases.md", documentOf("postgres", "replication", "vacuum"));
  const second = await ingest(db, "/docs/fruit.md", documentOf("banana", "apple"));
  t.same([first.change, second.change], ["created", "created"]);
  await waitConverged(db, servers.qdrant);

  const chunks = await chunkRows(db, first.id);
  t.ok(chunks.length >= 3, `several chunks (${chunks.length})`);
  t.same(chunks.map((chunk) => chunk.chunk_index), chunks.map((_, i) => i), "indexes are 0..n-1");
  const point = servers.qdrant.points(COLLECTION).find((p) => p.id === chunks[0]!.id)!;
  t.match(point.payload, { document_id: first.id, chunk_index: 0, source: "/docs/databases.md" });
  t.equal((await ingest(db, "/docs/fruit.md", documentOf("banana", "apple"))).change, "unchanged", "same content: no-op");
  t.equal((await db.query("select 1 from graphile_worker._private_jobs")).length, 0, "and no job");
});

t.test("an edit re-embeds only the changed chunks; unchanged ones keep id and vector", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  await startPipeline(t, db, servers);
  const { id } = await ingest(db, "/docs/a.md", documentOf("alpha", "bravo", "charlie"));
  await waitConverged(db, servers.qdrant);
  const before = await chunkRows(db, id);
  const embeddedBefore = servers.ollama.embeddedInputs;

  // Insert a paragraph at the front: every old chunk moves, but only the new text is new.
  t.equal((await ingest(db, "/docs/a.md", documentOf("zulu", "alpha", "bravo", "charlie"))).change, "updated");
  await waitConverged(db, servers.qdrant);
  const after = await chunkRows(db, id);
  const beforeIds = new Map(before.map((chunk) => [chunk.id, chunk]));
  const kept = after.filter((chunk) => beforeIds.has(chunk.id));
  const added = after.filter((chunk) => !beforeIds.has(chunk.id));
  t.ok(kept.length >= before.length - 1, `most chunks kept their id (${kept.length} of ${before.length})`);
  t.ok(added.length >= 1, "the new text made new chunks");
  t.equal(servers.ollama.embeddedInputs - embeddedBefore, added.length, "only the new chunks were embedded");
  for (const chunk of kept) t.same(chunk.embedded_at, beforeIds.get(chunk.id)!.embedded_at, `chunk ${chunk.id} kept its embedding`);
  const payloadIndexes = new Map(servers.qdrant.points(COLLECTION).map((point) => [point.id, point.payload.chunk_index]));
  t.same(after.map((chunk) => payloadIndexes.get(chunk.id)), after.map((chunk) => chunk.chunk_index), "moved chunks' payloads carry their new index");

  // Remove a paragraph: its chunks leave Qdrant.
  await ingest(db, "/docs/a.md", documentOf("zulu", "charlie"));
  await waitConverged(db, servers.qdrant);
  t.equal(qdrantPoints(servers.qdrant).size, (await chunkRows(db, id)).length);
});

t.test("delete_document removes the document, its chunks and its points", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  await startPipeline(t, db, servers);
  const doomed = await ingest(db, "/docs/doomed.md", documentOf("doomed"));
  const kept = await ingest(db, "/docs/kept.md", documentOf("kept"));
  await waitConverged(db, servers.qdrant);
  await db.appPool.transaction((tx) => addJob(tx, "delete_document", { documentId: doomed.id }));
  await waitConverged(db, servers.qdrant);
  t.same(await db.query("select id from documents"), [{ id: kept.id }]);
  t.ok([...servers.qdrant.points(COLLECTION)].every((point) => point.payload.document_id === kept.id), "only the kept document's points remain");
});

t.test("a job for a document deleted meanwhile changes nothing", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const { id } = await ingest(db, "/docs/gone.md", documentOf("gone"));
  await db.query("delete from documents where id = $1", [id]);
  await startPipeline(t, db, servers);
  await waitConverged(db, servers.qdrant);
  t.equal((await db.query("select 1 from dead_letters")).length, 0, "no dead letter");
  t.equal(servers.ollama.embedCalls, 0, "nothing embedded");
});

t.test("a long document is embedded across several jobs", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  await startPipeline(t, db, servers);
  const topics = Array.from({ length: 90 }, (_, i) => `topic${i}`);
  const { id } = await ingest(db, "/docs/long.md", documentOf(...topics));
  await waitConverged(db, servers.qdrant);
  const chunks = await chunkRows(db, id);
  t.ok(chunks.length > 64, `more chunks (${chunks.length}) than one job embeds`);
  t.equal(servers.ollama.embeddedInputs, chunks.length, "each chunk embedded once");
});

t.test("a model Ollama does not have is a dead letter that says to pull it", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  servers.ollama.models.clear();
  await startPipeline(t, db, servers);
  await ingest(db, "/docs/a.md", documentOf("alpha"));
  const [dead] = await (async () => {
    for (;;) {
      const rows = await db.query<{ task: string; reason: string; last_error: string }>("select task, reason, last_error from dead_letters");
      if (rows.length) return rows;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  t.match(dead, { task: "embed_chunks", reason: "permanent", last_error: /ollama pull test-embed/ });
  t.notOk(await converged(db, servers.qdrant));
});

t.test("search returns the document that shares the query's words, read back from Postgres", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const { pipeline } = await startPipeline(t, db, servers);
  await ingest(db, "/docs/databases.md", documentOf("postgres", "replication"));
  const fruit = await ingest(db, "/docs/fruit.md", documentOf("banana", "mango"));
  await ingest(db, "/docs/space.md", documentOf("rocket", "orbit"));
  await waitConverged(db, servers.qdrant);
  const deps = { db: db.appPool, qdrant: await createQdrantClient({ url: servers.qdrant.url, timeoutMs: 2_000 }), embedder: pipeline.embedder, collection: COLLECTION };

  const hits = await search(deps, "which sentence talks about mango", 3);
  t.equal(hits.length, 3);
  t.match(hits[0], { documentId: fruit.id, source: "/docs/fruit.md", content: /mango/ });
  t.ok(hits[0]!.score >= hits[1]!.score && hits[1]!.score >= hits[2]!.score, "best first");

  // Qdrant lags behind Postgres: a hit whose chunk changed or vanished is dropped, not shown stale.
  const best = hits[0]!;
  const [row] = await db.query<{ id: string }>("select id from chunks where document_id = $1 and chunk_index = $2", [best.documentId, best.chunkIndex]);
  await db.query("update chunks set content_sha256 = repeat('0', 64) where id = $1", [row!.id]);
  const after = await search(deps, "which sentence talks about mango", 3);
  t.notOk(after.some((hit) => hit.documentId === best.documentId && hit.chunkIndex === best.chunkIndex), "the stale hit is dropped");
  t.equal(after.length, 3, "and the next one takes its place");
});
