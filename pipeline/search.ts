import type { CommonQueryMethods } from "slonik";
import type { QdrantClient } from "@qdrant/js-client-rest";
import type { Embedder } from "./embedder.ts";
import { embeddedChunks } from "./queries.ts";

export interface SearchHit {
  documentId: string;
  source: string;
  chunkIndex: number;
  score: number;
  content: string;
}

export interface SearchDependencies {
  db: CommonQueryMethods;
  qdrant: QdrantClient;
  embedder: Embedder;
  collection: string;
}

/**
 * Hits Qdrant might return beyond `limit`, so that dropping stale ones still leaves `limit`
 * hits in the common case of a little drift.
 */
const OVERFETCH = 2;

/**
 * Semantic search: embeds the query, asks Qdrant for the nearest points, and answers with the
 * chunks as Postgres has them. Qdrant may lag behind Postgres (the outbox is asynchronous), so
 * a hit whose chunk is gone, or whose text changed since the point was written, is dropped
 * rather than shown with text that is not what was matched.
 */
export async function search(deps: SearchDependencies, text: string, limit: number, signal?: AbortSignal): Promise<SearchHit[]> {
  const [vector] = await deps.embedder.embed([text], signal);
  const { points } = await deps.qdrant.query(deps.collection, {
    query: vector!,
    limit: limit * OVERFETCH,
    with_payload: ["content_sha256"],
  });
  const chunks = new Map((await embeddedChunks(deps.db, points.map((point) => String(point.id)))).map((chunk) => [chunk.id, chunk]));
  const hits: SearchHit[] = [];
  for (const point of points) {
    const chunk = chunks.get(String(point.id));
    if (!chunk || chunk.content_sha256 !== point.payload?.content_sha256) continue;
    hits.push({ documentId: chunk.document_id, source: chunk.source, chunkIndex: chunk.chunk_index, score: point.score, content: chunk.content });
    if (hits.length === limit) break;
  }
  return hits;
}
