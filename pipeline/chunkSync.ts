import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";
import { defineSync, type PointId, type PointState, type Sync } from "pgconverge";

/**
 * One pass over the vector's values. z.array(z.number()) checks each value through zod's
 * machinery: 11 ms for a batch of 128 768-d vectors, the relay's largest cost after printing
 * the request; this takes under 2.5 ms.
 */
const Vector = z.custom<number[]>((value) => Array.isArray(value) && value.every((each) => typeof each === "number"), "expected an array of numbers");

const ChunkPointRow = z.object({
  id: z.string(),
  document_id: z.string(),
  chunk_index: z.number(),
  content_sha256: z.string(),
  source: z.string(),
  embedding: Vector,
});

/**
 * The current state of the given chunks as points: every chunk that exists and is embedded.
 * An id missing from the result has no point any more (deleted, or not embedded yet). The
 * payload is the data contract: document_id, chunk_index, content_sha256, source.
 */
export async function loadChunkPoints(db: CommonQueryMethods, ids: readonly PointId[]): Promise<ReadonlyMap<PointId, PointState>> {
  // Chunk ids are UUIDs; an integer key cannot be a chunk.
  const uuids = ids.filter((id): id is string => typeof id === "string");
  if (uuids.length === 0) return new Map();
  // The embedding as JSON: JSON.parse reads it several times faster than pg's parser of
  // real[]'s text (bench/vectorJson.ts), and Postgres prints float4 at its shortest either way.
  const rows = await db.any(sql.type(ChunkPointRow)`
    select c.id, c.document_id, c.chunk_index, c.content_sha256, d.source, to_json(c.embedding) as embedding
    from chunks c join documents d on d.id = c.document_id
    where c.id = any(${sql.array(uuids, "uuid")}) and c.embedding is not null
  `);
  return new Map(
    rows.map((row) => [
      row.id,
      {
        vector: row.embedding,
        payload: { document_id: row.document_id, chunk_index: row.chunk_index, content_sha256: row.content_sha256, source: row.source },
        hash: row.content_sha256,
      },
    ]),
  );
}

const ChunkHash = z.object({ id: z.string(), hash: z.string() });

/** Embedded chunks in id order after `after`, with their content hashes (keyset pagination on the primary key). */
export function pageChunkHashes(db: CommonQueryMethods, after: PointId | null, limit: number) {
  return db.any(sql.type(ChunkHash)`
    select id, content_sha256 as hash from chunks
    where embedding is not null ${after === null ? sql.fragment`` : sql.fragment`and id > ${String(after)}::uuid`}
    order by id limit ${limit}
  `);
}

/** The reference pipeline's sync: embedded chunks mirrored into `collection`, one point per chunk. */
export function chunkSync(options: { collection: string; dimensions: number }): Sync {
  return defineSync({
    collection: options.collection,
    vectors: { size: options.dimensions, distance: "Cosine" },
    load: loadChunkPoints,
    page: pageChunkHashes,
  });
}
