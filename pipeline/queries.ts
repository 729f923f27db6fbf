import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";
import { addJobs, enqueueSync } from "pgconverge";
import type { Chunk } from "./chunker.ts";

/** The pipeline's SQL, one statement (or one step) per function. */

/** Task identifiers: the file names in tasks/. */
export const INGEST_DOCUMENT = "ingest_document";
export const EMBED_CHUNKS = "embed_chunks";
export const DELETE_DOCUMENT = "delete_document";

/**
 * One pending job per task and document: a second enqueue before the first ran replaces it
 * (graphile-worker's job_key), so ten edits of a file cost one chunking pass.
 */
export const documentJobKey = (task: string, documentId: string) => `${task}:${documentId}`;

const IdRow = z.object({ id: z.string() });

export type DocumentChange = "created" | "updated" | "unchanged";

export interface DocumentInput {
  source: string;
  content: string;
  contentSha256: string;
}

/**
 * Upserts a document by source and, when its content changed, enqueues its ingest job in the
 * same transaction: the job exists if and only if the new content committed.
 */
export async function upsertDocument(tx: CommonQueryMethods, document: DocumentInput, options: IngestOptions = {}): Promise<{ id: string; change: DocumentChange }> {
  const [result] = await upsertDocuments(tx, [document], options);
  return result!;
}

const Stored = z.object({ id: z.string(), source: z.string(), content_sha256: z.string() });
const Written = z.object({ id: z.string(), source: z.string(), created: z.boolean() });

/**
 * upsertDocument for many documents with distinct sources, in a few statements whatever their
 * number: one read finds the unchanged ones (skipped without a write, not even a row lock),
 * one insert writes the rest, one statement enqueues their ingest jobs. Results in input order.
 */
export async function upsertDocuments(
  tx: CommonQueryMethods,
  documents: readonly DocumentInput[],
  options: IngestOptions = {},
): Promise<Array<{ id: string; change: DocumentChange }>> {
  if (documents.length === 0) return [];
  const sources = documents.map((document) => document.source);
  if (new Set(sources).size !== sources.length) throw new Error("upsertDocuments: sources must be distinct");
  const stored = new Map(
    (await tx.any(sql.type(Stored)`select id, source, content_sha256 from documents where source = any(${sql.array(sources, "text")})`)).map((row) => [
      row.source,
      row,
    ]),
  );
  const changed = documents.filter((document) => stored.get(document.source)?.content_sha256 !== document.contentSha256);
  const written = new Map<string, { id: string; created: boolean }>();
  if (changed.length > 0) {
    // The where clause still guards a document another ingest set to this content meanwhile.
    const rows = await tx.any(sql.type(Written)`
      insert into documents (source, content, content_sha256)
      select * from ${sql.unnest(
        changed.map((document) => [document.source, document.content, document.contentSha256]),
        ["text", "text", "text"],
      )}
      on conflict (source) do update
        set content = excluded.content, content_sha256 = excluded.content_sha256, updated_at = now()
        where documents.content_sha256 <> excluded.content_sha256
      returning id, source, (xmax = 0) as created
    `);
    for (const row of rows) written.set(row.source, row);
    await queueIngests(tx, rows.map((row) => row.id), options);
  }
  const results: Array<{ id: string; change: DocumentChange }> = [];
  for (const document of documents) {
    const row = written.get(document.source);
    if (row) results.push({ id: row.id, change: row.created ? "created" : "updated" });
    else {
      const id = stored.get(document.source)?.id ?? (await tx.oneFirst(sql.type(IdRow)`select id from documents where source = ${document.source}`));
      results.push({ id, change: "unchanged" });
    }
  }
  return results;
}

export interface IngestOptions {
  /** Delay of the chunking after the first change, ms (INGEST_DEBOUNCE_MS); default 0, at once. */
  debounceMs?: number;
}

/**
 * Queues the documents' chunking (ingest_document) in the caller's transaction. The task reads
 * the content when it runs and makes the chunk rows match it, so this also repairs chunks made
 * by an older chunker: changed text gets new ids, old points leave Qdrant through the outbox.
 *
 * One waiting job per document (its job key): queueing it again before it ran updates that job
 * and keeps its run time (preserve_run_at), so a burst of edits within `debounceMs` of the first
 * is one chunking pass, and a stream of edits still gets one at least every `debounceMs`
 * (a trailing debounce, "replace", would wait for the stream to stop). An edit while the pass
 * runs queues the next one.
 */
export function queueIngests(tx: CommonQueryMethods, documentIds: readonly string[], options: IngestOptions = {}): Promise<void> {
  const debounceMs = options.debounceMs ?? 0;
  // The client's clock: a skew against the database's only shortens or lengthens the window.
  const runAt = debounceMs > 0 ? new Date(Date.now() + debounceMs) : undefined;
  return addJobs(
    tx,
    INGEST_DOCUMENT,
    documentIds.map((documentId) => ({
      payload: { documentId },
      spec: { jobKey: documentJobKey(INGEST_DOCUMENT, documentId), jobKeyMode: "preserve_run_at" as const, runAt },
    })),
  );
}

/**
 * Locks a document for the rest of the transaction. Every pipeline step that writes a
 * document's chunks takes this lock first, so steps on one document run one at a time and
 * in the same lock order.
 */
export function lockDocument(tx: CommonQueryMethods, documentId: string) {
  return tx.maybeOne(sql.type(z.object({ id: z.string(), content: z.string() }))`
    select id, content from documents where id = ${documentId} for update
  `);
}

export interface ChunkReplacement {
  /** Chunks no longer in the document: their points must leave Qdrant. */
  removed: string[];
  /** Embedded chunks that moved: their points' chunk_index must be rewritten. */
  moved: string[];
  /** Whether some chunk of the document still needs an embedding. */
  needsEmbedding: boolean;
}

/**
 * Makes the document's chunk rows equal `chunks`. Ids are derived from the text, so an
 * unchanged chunk keeps its row and its embedding; only new text is inserted unembedded.
 */
export async function replaceChunks(tx: CommonQueryMethods, documentId: string, chunks: readonly Chunk[]): Promise<ChunkReplacement> {
  const removed = await tx.anyFirst(sql.type(IdRow)`
    delete from chunks
    where document_id = ${documentId} and not (id = any(${sql.array(chunks.map((chunk) => chunk.id), "uuid")}))
    returning id
  `);
  const written = await tx.any(sql.type(z.object({ id: z.string(), embedded: z.boolean() }))`
    insert into chunks (id, document_id, chunk_index, content, content_sha256)
    select id, ${documentId}, chunk_index, content, content_sha256
    from ${sql.unnest(
      chunks.map((chunk) => [chunk.id, chunk.index, chunk.content, chunk.contentSha256]),
      ["uuid", "int4", "text", "text"],
    )} as new_chunk (id, chunk_index, content, content_sha256)
    on conflict (id) do update set chunk_index = excluded.chunk_index, updated_at = now()
      where chunks.chunk_index <> excluded.chunk_index
    returning id, embedding is not null as embedded
  `);
  const needsEmbedding = await tx.exists(sql.unsafe`
    select 1 from chunks where document_id = ${documentId} and embedding is null
  `);
  return { removed: [...removed], moved: written.filter((row) => row.embedded).map((row) => row.id), needsEmbedding };
}

export const ChunkToEmbed = z.object({ id: z.string(), content: z.string(), content_sha256: z.string() });
export type ChunkToEmbed = z.infer<typeof ChunkToEmbed>;

/** The document's first `limit` chunks without an embedding, in document order. */
export function chunksToEmbed(db: CommonQueryMethods, documentId: string, limit: number) {
  return db.any(sql.type(ChunkToEmbed)`
    select id, content, content_sha256 from chunks
    where document_id = ${documentId} and embedding is null
    order by chunk_index
    limit ${limit}
  `);
}

export interface Embedding {
  id: string;
  contentSha256: string;
  vector: readonly number[];
}

/**
 * Stores embeddings of chunks that still exist unembedded with the same text, and returns
 * their ids; a chunk removed or already embedded meanwhile is left alone.
 */
export async function storeEmbeddings(tx: CommonQueryMethods, model: string, embeddings: readonly Embedding[]): Promise<readonly string[]> {
  if (embeddings.length === 0) return [];
  return tx.anyFirst(sql.type(IdRow)`
    update chunks set embedding = new_embedding.vector::real[], embedding_model = ${model}, embedded_at = now(), updated_at = now()
    from ${sql.unnest(
      embeddings.map((embedding) => [embedding.id, embedding.contentSha256, `{${embedding.vector.join(",")}}`]),
      ["uuid", "text", "text"],
    )} as new_embedding (id, content_sha256, vector)
    where chunks.id = new_embedding.id and chunks.content_sha256 = new_embedding.content_sha256 and chunks.embedding is null
    returning chunks.id
  `);
}

export function hasUnembeddedChunks(tx: CommonQueryMethods, documentId: string): Promise<boolean> {
  return tx.exists(sql.unsafe`select 1 from chunks where document_id = ${documentId} and embedding is null`);
}

/**
 * Deletes a document and its chunks and queues the removal of their points, in the caller's
 * transaction. False if there was no such document.
 */
export async function deleteDocument(tx: CommonQueryMethods, collection: string, documentId: string): Promise<boolean> {
  if (!(await lockDocument(tx, documentId))) return false;
  const chunkIds = await tx.anyFirst(sql.type(IdRow)`delete from chunks where document_id = ${documentId} returning id`);
  await tx.query(sql.unsafe`delete from documents where id = ${documentId}`);
  await enqueueSync(tx, collection, chunkIds);
  return true;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The document a user named by id or by source (as given, then as one of `alternatives`). */
export function findDocument(db: CommonQueryMethods, reference: string, alternatives: readonly string[] = []) {
  const sources = [reference, ...alternatives];
  return db.maybeOne(sql.type(z.object({ id: z.string(), source: z.string() }))`
    select id, source from documents
    where ${UUID.test(reference) ? sql.fragment`id = ${reference} or` : sql.fragment``} source = any(${sql.array(sources, "text")})
    order by array_position(${sql.array(sources, "text")}, source) nulls first
    limit 1
  `);
}

export const StoredChunk = z.object({
  id: z.string(),
  document_id: z.string(),
  source: z.string(),
  chunk_index: z.number(),
  content: z.string(),
  content_sha256: z.string(),
});
export type StoredChunk = z.infer<typeof StoredChunk>;

/** Embedded chunks by id, with their document's source. */
export function embeddedChunks(db: CommonQueryMethods, ids: readonly string[]) {
  return db.any(sql.type(StoredChunk)`
    select c.id, c.document_id, d.source, c.chunk_index, c.content, c.content_sha256
    from chunks c join documents d on d.id = c.document_id
    where c.id = any(${sql.array([...ids], "uuid")}) and c.embedding is not null
  `);
}
