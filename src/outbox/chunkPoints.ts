import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";

/** What a Qdrant point must look like, read from Postgres. */
export interface PointState {
  id: string;
  vector: number[];
  payload: { document_id: string; chunk_index: number; content_sha256: string; source: string };
}

const ChunkPointRow = z.object({
  id: z.string(),
  document_id: z.string(),
  chunk_index: z.number(),
  content_sha256: z.string(),
  source: z.string(),
  embedding: z.array(z.number()),
});

/**
 * The current state of the given chunks as points: every chunk that exists and is embedded.
 * An id missing from the result has no point any more (deleted, or not embedded yet).
 */
export async function loadChunkPoints(db: CommonQueryMethods, ids: readonly string[]): Promise<Map<string, PointState>> {
  if (ids.length === 0) return new Map();
  const rows = await db.any(sql.type(ChunkPointRow)`
    select c.id, c.document_id, c.chunk_index, c.content_sha256, d.source, c.embedding
    from chunks c join documents d on d.id = c.document_id
    where c.id = any(${sql.array([...ids], "uuid")}) and c.embedding is not null
  `);
  return new Map(
    rows.map((row) => [
      row.id,
      {
        id: row.id,
        vector: row.embedding,
        payload: { document_id: row.document_id, chunk_index: row.chunk_index, content_sha256: row.content_sha256, source: row.source },
      },
    ]),
  );
}
