import { sql, type CommonQueryMethods, type DatabasePool } from "slonik";
import { z } from "zod";
import { enqueuePointChanges } from "./outbox.ts";
import type { QdrantClient } from "./qdrant.ts";

export interface ReconcileOptions {
  pool: DatabasePool;
  qdrant: QdrantClient;
  collection: string;
  /** Turn every difference into an outbox change for the relay to repair. */
  repair: boolean;
  /** Points per Qdrant page and Postgres page; memory stays O(pageSize). */
  pageSize?: number;
  onProgress?: (progress: { phase: "qdrant" | "postgres"; done: number; total: number }) => void;
  /** Checked between pages: an aborted run stops early. */
  signal?: AbortSignal;
}

export interface DriftReport {
  collection: string;
  qdrantPoints: number;
  postgresPoints: number;
  /** Embedded chunks with no point. */
  missing: number;
  /** Points with no embedded chunk. */
  extra: number;
  /** Points whose content_sha256 differs from their chunk's. */
  stale: number;
  /** Differences not counted because an outbox change for the key is already pending. */
  inFlight: number;
  repaired: boolean;
  /** Database time the comparison started, ISO 8601 in UTC. */
  startedAt: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ChunkHash = z.object({ id: z.string(), content_sha256: z.string() });

/**
 * Compares Qdrant with Postgres in two bounded passes: Qdrant's points page by page against
 * their chunks (extra, stale), then Postgres' embedded chunks page by page against Qdrant
 * (missing). Keys with a pending outbox change are in flight, not drift. With `repair`, each
 * difference becomes an outbox change: the relay then writes the current state of the key.
 */
export async function reconcile(options: ReconcileOptions): Promise<DriftReport> {
  const { pool, qdrant, collection, repair } = options;
  const pageSize = options.pageSize ?? 1000;
  // The database clock, like finished_at's default; ISO 8601 in UTC like every time in --json output.
  const startedAt = (await pool.oneFirst(sql.type(z.object({ now: z.coerce.date() }))`select clock_timestamp() as now`)).toISOString();
  const report: DriftReport = { collection, qdrantPoints: 0, postgresPoints: 0, missing: 0, extra: 0, stale: 0, inFlight: 0, repaired: repair, startedAt };

  // A deleted collection is drift too (every point missing), not an error: that is how
  // Qdrant is rebuilt from the embeddings kept in Postgres.
  const { exists } = await qdrant.collectionExists(collection);
  const qdrantTotal = exists ? (await qdrant.count(collection, { exact: true })).count : 0;
  let offset: string | number | undefined;
  while (exists) {
    options.signal?.throwIfAborted();
    const page = await qdrant.scroll(collection, {
      limit: pageSize,
      ...(offset === undefined ? {} : { offset }),
      with_payload: ["content_sha256"],
      with_vector: false,
    });
    const points = page.points.map((point) => ({ id: String(point.id), hash: (point.payload as { content_sha256?: unknown } | null)?.content_sha256 }));
    report.qdrantPoints += points.length;
    const ours = points.filter((point) => UUID.test(point.id));
    const foreign = points.filter((point) => !UUID.test(point.id)).map((point) => point.id);
    const rows = await pool.any(sql.type(ChunkHash)`
      select id, content_sha256 from chunks
      where id = any(${sql.array(ours.map((point) => point.id), "uuid")}) and embedding is not null
    `);
    const hashes = new Map(rows.map((row) => [row.id, row.content_sha256]));
    const extra = ours.filter((point) => !hashes.has(point.id)).map((point) => point.id);
    const stale = ours.filter((point) => hashes.has(point.id) && hashes.get(point.id) !== point.hash).map((point) => point.id);
    const pending = await pendingKeys(pool, collection, [...extra, ...stale]);
    report.extra += extra.filter((id) => !pending.has(id)).length + foreign.length;
    report.stale += stale.filter((id) => !pending.has(id)).length;
    report.inFlight += pending.size;
    if (repair) {
      await enqueuePointChanges(pool, collection, [...extra, ...stale].filter((id) => !pending.has(id)));
      // Integer ids are never chunk ids: nothing in Postgres can own them.
      if (foreign.length > 0) await qdrant.delete(collection, { wait: true, points: foreign.map(Number) });
    }
    options.onProgress?.({ phase: "qdrant", done: report.qdrantPoints, total: qdrantTotal });
    offset = page.next_page_offset === null || page.next_page_offset === undefined ? undefined : (page.next_page_offset as string | number);
    if (offset === undefined) break;
  }

  const postgresTotal = await pool.oneFirst(sql.type(z.object({ count: z.number() }))`
    select count(*)::int as count from chunks where embedding is not null
  `);
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    options.signal?.throwIfAborted();
    const ids = await pool.anyFirst(sql.type(z.object({ id: z.string() }))`
      select id from chunks where embedding is not null and id > ${after} order by id limit ${pageSize}
    `);
    if (ids.length === 0) break;
    after = ids[ids.length - 1]!;
    report.postgresPoints += ids.length;
    const found = exists ? await qdrant.retrieve(collection, { ids: [...ids], with_payload: false, with_vector: false }) : [];
    const present = new Set(found.map((point) => String(point.id)));
    const missing = ids.filter((id) => !present.has(id));
    const pending = await pendingKeys(pool, collection, missing);
    report.missing += missing.filter((id) => !pending.has(id)).length;
    report.inFlight += pending.size;
    if (repair) await enqueuePointChanges(pool, collection, missing.filter((id) => !pending.has(id)));
    options.onProgress?.({ phase: "postgres", done: report.postgresPoints, total: postgresTotal });
  }

  return report;
}

/** Records a run, so `status` can show the drift found last. */
export async function recordReconcileRun(db: CommonQueryMethods, report: DriftReport): Promise<void> {
  await db.query(sql.unsafe`
    insert into reconcile_runs (collection, started_at, qdrant_points, postgres_points, missing, extra, stale, repaired)
    values (${report.collection}, ${report.startedAt}, ${report.qdrantPoints}, ${report.postgresPoints},
            ${report.missing}, ${report.extra}, ${report.stale}, ${report.repaired})
  `);
}

async function pendingKeys(pool: DatabasePool, collection: string, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const pending = await pool.anyFirst(sql.type(z.object({ point_id: z.string() }))`
    select point_id from outbox
    where collection = ${collection} and state = 'pending' and point_id = any(${sql.array([...ids], "uuid")})
  `);
  return new Set(pending);
}
