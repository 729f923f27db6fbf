import { createHash, randomUUID } from "node:crypto";
import { sql } from "slonik";
import { enqueuePointChanges } from "../../src/outbox/outbox.ts";
import { createQdrantClient } from "../../src/outbox/qdrant.ts";
import { Relay, type RelayConfig } from "../../src/outbox/relay.ts";
import { chunkSync } from "../../pipeline/chunkSync.ts";
import { testLog, type TestDatabase } from "./db.ts";
import type { FakeQdrant } from "../servers/qdrant.ts";

export const COLLECTION = "chunks";
export const DIMENSIONS = 4;
/** The reference pipeline's sync, as the CLI declares it, at the test size. */
export const CHUNK_SYNC = chunkSync({ collection: COLLECTION, dimensions: DIMENSIONS });

/** This database's owner id, stamped into every point its relay writes. */
export async function ownerOf(db: TestDatabase): Promise<string> {
  const [row] = await db.query<{ owner_id: string }>("select owner_id from qdrant_owner");
  return row!.owner_id;
}

export const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

export function vectorFor(text: string, size = DIMENSIONS): number[] {
  const digest = createHash("sha256").update(text).digest();
  return Array.from({ length: size }, (_, i) => digest[i]! / 255 + 0.01);
}

export async function insertDocument(db: TestDatabase, source = `doc-${randomUUID()}`): Promise<string> {
  const content = `content of ${source}`;
  const [row] = await db.query<{ id: string }>(
    "insert into documents (source, content, content_sha256) values ($1, $2, $3) returning id",
    [source, content, sha256(content)],
  );
  return row!.id;
}

/** Writes a chunk with its embedding and its outbox change in one transaction, as tasks do. */
export async function putChunk(
  db: TestDatabase,
  documentId: string,
  id: string,
  content: string,
  vector = vectorFor(content),
  index?: number,
): Promise<void> {
  await db.appPool.transaction(async (tx) => {
    await tx.query(sql.unsafe`
      insert into chunks (id, document_id, chunk_index, content, content_sha256, embedding, embedding_model, embedded_at)
      values (${id}, ${documentId},
        coalesce(${index ?? null}::int4, (select coalesce(max(chunk_index) + 1, 0) from chunks where document_id = ${documentId})),
        ${content}, ${sha256(content)}, ${sql.array(vector, "float4")}, 'test', now())
      on conflict (id) do update set content = excluded.content, content_sha256 = excluded.content_sha256,
        embedding = excluded.embedding, embedded_at = now(), updated_at = now()
    `);
    await enqueuePointChanges(tx, COLLECTION, [id]);
  });
}

export async function deleteChunk(db: TestDatabase, id: string): Promise<void> {
  await db.appPool.transaction(async (tx) => {
    await tx.query(sql.unsafe`delete from chunks where id = ${id}`);
    await enqueuePointChanges(tx, COLLECTION, [id]);
  });
}

/** Embedded chunks as id -> content_sha256. */
export async function postgresPoints(db: TestDatabase): Promise<Map<string, string>> {
  const rows = await db.query<{ id: string; content_sha256: string }>("select id, content_sha256 from chunks where embedding is not null");
  return new Map(rows.map((row) => [row.id, row.content_sha256]));
}

/**
 * The payload the data contract names for a chunk written by putChunk (the first of its
 * document), as the relay writes it with its reserved keys, for the stamp the point carries.
 */
export async function contractPayload(db: TestDatabase, chunk: { documentId: string; source: string; content: string }, stamp: unknown) {
  return {
    document_id: chunk.documentId,
    chunk_index: 0,
    content_sha256: sha256(chunk.content),
    source: chunk.source,
    pgconverge_owner: await ownerOf(db),
    pgconverge_hash: sha256(chunk.content),
    pgconverge_version: stamp,
  };
}

export function qdrantPoints(fake: FakeQdrant): Map<string, string> {
  return new Map(fake.points(COLLECTION).map((point) => [String(point.id), String(point.payload.content_sha256)]));
}

export async function pendingOutbox(db: TestDatabase): Promise<number> {
  const [row] = await db.query<{ count: string }>("select count(*) from outbox where state = 'pending'");
  return Number(row!.count);
}

/** A relay for the chunks sync (of `dimensions`, default DIMENSIONS), or for the syncs given in overrides. */
export async function relayFor(db: TestDatabase, fake: FakeQdrant, overrides: Partial<RelayConfig> & { dimensions?: number } = {}): Promise<Relay> {
  const { dimensions = DIMENSIONS, ...rest } = overrides;
  return new Relay({
    pool: db.appPool,
    listenUrl: db.url,
    qdrant: await createQdrantClient({ url: fake.url, timeoutMs: 2_000 }),
    syncs: [chunkSync({ collection: COLLECTION, dimensions })],
    log: testLog,
    batchSize: 32,
    pollIntervalMs: 200,
    leaseMs: 5_000,
    maxBackoffMs: 200,
    ...rest,
  });
}
