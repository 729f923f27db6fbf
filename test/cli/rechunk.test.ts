// `pgconverge rechunk` repairs documents ingested by 0.1, whose chunker rewrote text
// ("127.0.0.1" stored as "127. 0. 0. 1"): a worker re-chunks them, and the rewritten chunks
// leave Postgres and Qdrant.
import t from "tap";
import { chunkText, nameUuid } from "../../pipeline/chunker.ts";
import { COLLECTION, putChunk, sha256, vectorFor } from "../helpers/chunks.ts";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { MODEL_DIMENSIONS, pipelineEnv, startPipeline, startServers, waitConverged } from "../helpers/pipeline.ts";

const filler = "Words that make this paragraph longer than one piece of a chunk, so that its sentences are split apart. ".repeat(12);
const CONTENT = `${filler}Connect to 127.0.0.1 with Node v20.11.1. ${filler}\n\nAfter a crash, run graphile_worker.force_unlock_workers.`;
/** What the 0.1 chunker stored for CONTENT: sentences split at every dot and rejoined with spaces. */
const REWRITTEN = [
  `${filler.trim()} Connect to 127. 0. 0. 1 with Node v20. 11. 1. ${filler.trim()}`.slice(0, 1100),
  "After a crash, run graphile_worker. force_unlock_workers.",
];

/** A document as 0.1 left it: its content, and embedded chunks of rewritten text already in Qdrant. */
async function oldDocument(db: TestDatabase, source: string): Promise<string> {
  const [row] = await db.query<{ id: string }>(
    "insert into documents (source, content, content_sha256) values ($1, $2, $3) returning id",
    [source, CONTENT, sha256(CONTENT)],
  );
  for (const [index, content] of REWRITTEN.entries()) {
    const vector = Array.from({ length: MODEL_DIMENSIONS }, (_, i) => vectorFor(content, 32)[i % 32]!);
    await putChunk(db, row!.id, nameUuid(`${row!.id}\n${sha256(content)}\n0`), content, vector, index);
  }
  return row!.id;
}

async function chunksOf(db: TestDatabase, documentId: string) {
  return db.query<{ id: string; content: string }>("select id, content from chunks where document_id = $1 order by chunk_index", [documentId]);
}

t.test("rechunk --all replaces rewritten chunks with exact ones, in Postgres and in Qdrant", async (t) => {
  const db = await createTestDatabase(t);
  const servers = await startServers(t);
  const repaired = await oldDocument(db, "/docs/old.md");
  const untouched = await oldDocument(db, "/docs/other.md");
  await startPipeline(t, db, servers);
  await waitConverged(db, servers.qdrant);
  t.notOk((await chunksOf(db, repaired)).every((chunk) => CONTENT.includes(chunk.content)), "before: chunks hold rewritten text");
  const oldIds = new Set((await chunksOf(db, repaired)).map((chunk) => chunk.id));

  const env = pipelineEnv(db, servers);
  const one = await runCli(["rechunk", "/docs/old.md"], { env });
  t.equal(one.code, 0, one.stderr);
  t.match(one.stdout, /^queued 1 document for chunking/);
  await waitConverged(db, servers.qdrant);
  const chunks = await chunksOf(db, repaired);
  t.same(chunks.map((chunk) => chunk.id), chunkText(repaired, CONTENT).map((chunk) => chunk.id), "the chunks are today's chunker's");
  t.ok(chunks.every((chunk) => CONTENT.includes(chunk.content)), "every chunk is a substring of its document");
  t.ok(chunks.some((chunk) => chunk.content.includes("127.0.0.1 with Node v20.11.1.")));
  const points = new Set(servers.qdrant.points(COLLECTION).map((point) => String(point.id)));
  t.notOk([...oldIds].some((id) => points.has(id)), "the rewritten chunks' points left Qdrant");
  t.notOk((await chunksOf(db, untouched)).every((chunk) => CONTENT.includes(chunk.content)), "a document not named is left alone");

  const all = await runCli(["rechunk", "--all"], { env });
  t.equal(all.code, 0, all.stderr);
  t.match(all.stdout, /^queued 2 documents for chunking/);
  await waitConverged(db, servers.qdrant);
  for (const id of [repaired, untouched]) {
    t.ok((await chunksOf(db, id)).every((chunk) => CONTENT.includes(chunk.content)), `document ${id}: every chunk is a substring`);
  }
  t.same((await chunksOf(db, repaired)).map((chunk) => chunk.id), chunks.map((chunk) => chunk.id), "re-chunking exact chunks keeps their ids");
});

t.test("rechunk: bad usage exits 2, an unknown document exits 1 and queues nothing", async (t) => {
  const db = await createTestDatabase(t);
  const env = { DATABASE_URL: db.url };
  for (const args of [["rechunk"], ["rechunk", "--all", "/docs/a.md"]]) {
    const result = await runCli(args, { env });
    t.equal(result.code, 2, `pgconverge ${args.join(" ")}`);
    t.match(result.stderr, /^pgconverge: rechunk needs --all or document ids or sources, not both/);
    t.equal(result.stderr.trim().split("\n").length, 1, "one line");
  }
  await db.query("insert into documents (source, content, content_sha256) values ('/docs/a.md', 'A.', $1)", [sha256("A.")]);
  const missing = await runCli(["rechunk", "/docs/a.md", "/docs/nope.md"], { env });
  t.equal(missing.code, 1);
  t.equal(missing.stderr, 'pgconverge: no document with id or source "/docs/nope.md"\n');
  t.equal((await db.query("select 1 from graphile_worker._private_jobs")).length, 0, "nothing queued");
});
