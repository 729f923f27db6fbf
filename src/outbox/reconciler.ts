import { isDeepStrictEqual } from "node:util";
import type { DatabasePool } from "slonik";
import { advanceStamps, databaseNow, enqueuePointChanges, pendingKeys, readOwner } from "./outbox.ts";
import type { QdrantClient, ReadConsistency } from "./qdrant.ts";
import { HASH_KEY, OWNER_KEY, pointIdText, qdrantPointId, STAMP_KEY, type PointId, type PointState, type Sync } from "./sync.ts";

export interface ReconcileOptions {
  pool: DatabasePool;
  qdrant: QdrantClient;
  sync: Sync;
  /** This database's owner id (qdrant_owner); read from the database when left out. */
  owner?: string;
  /** Turn every difference into an outbox change for the relay to repair. */
  repair: boolean;
  /** Points per Qdrant page and Postgres page; memory stays O(pageSize). */
  pageSize?: number;
  /** `total` is null when unknown (the Postgres side is paged without counting). */
  onProgress?: (progress: { phase: "qdrant" | "postgres"; done: number; total: number | null }) => void;
  /** Checked between pages: an aborted run stops early. */
  signal?: AbortSignal;
  /**
   * Qdrant's read consistency of the scrolls and retrieves (QDRANT_READ_CONSISTENCY). Default
   * "majority": on a replicated collection a lagging replica alone does not report drift.
   */
  readConsistency?: ReadConsistency;
}

export interface DriftReport {
  collection: string;
  /** Points of this database (its owner id) in the collection. */
  qdrantPoints: number;
  /** Keys the sync pages through: rows that should have a point. */
  postgresPoints: number;
  /** Rows with no point of this database (absent, or present without an owner: a repair adopts it). */
  missing: number;
  /** Points of this database with no row. */
  extra: number;
  /** Points of this database whose hash or payload differs from their row's, or that carry no version stamp. */
  stale: number;
  /** Points of the collection with no owner at all (written before owners existed); never deleted by a repair. */
  unowned: number;
  /** Differences not counted because an outbox change for the key is already pending. */
  inFlight: number;
  repaired: boolean;
  /** Database time the comparison started, ISO 8601 in UTC. */
  startedAt: string;
}

/**
 * Compares one sync's collection with its rows in two bounded passes: the points this database
 * owns, page by page, against their rows (extra, stale), then the sync's keys page by page
 * against Qdrant (missing). Only points carrying this database's owner id are looked at, so
 * another database's points in a shared collection are never counted or touched; unowned
 * points are only counted. Keys with a pending outbox change are in flight, not drift. With
 * `repair`, each difference becomes an outbox change: the relay then writes the current state
 * of the key (an extra point is deleted because its row is gone).
 */
export async function reconcile(options: ReconcileOptions): Promise<DriftReport> {
  const { pool, qdrant, sync, repair } = options;
  const { collection } = sync;
  const pageSize = options.pageSize ?? 1000;
  const owner = options.owner ?? (await readOwner(pool));
  // ISO 8601 in UTC, like every time in --json output.
  const startedAt = await databaseNow(pool);
  const report: DriftReport = { collection, qdrantPoints: 0, postgresPoints: 0, missing: 0, extra: 0, stale: 0, unowned: 0, inFlight: 0, repaired: repair, startedAt };
  const ours = { must: [{ key: OWNER_KEY, match: { value: owner } }] };
  const consistency = options.readConsistency ?? "majority";

  // A deleted collection is drift too (every point missing), not an error: that is how
  // Qdrant is rebuilt from the vectors kept in Postgres.
  const { exists } = await qdrant.collectionExists(collection);
  const qdrantTotal = exists ? (await qdrant.count(collection, { exact: true, filter: ours })).count : 0;
  if (exists) report.unowned = (await qdrant.count(collection, { exact: true, filter: { must: [{ is_empty: { key: OWNER_KEY } }] } })).count;
  let offset: string | number | undefined;
  while (exists) {
    options.signal?.throwIfAborted();
    const page = await qdrant.scroll(collection, {
      limit: pageSize,
      filter: ours,
      ...(offset === undefined ? {} : { offset }),
      with_payload: true,
      with_vector: false,
      consistency,
    });
    const points = page.points.map((point) => ({ id: pointIdText(point.id), payload: (point.payload ?? {}) as Record<string, unknown> }));
    const newest = Math.max(0, ...points.map((point) => point.payload[STAMP_KEY]).filter((stamp): stamp is number => Number.isSafeInteger(stamp)));
    if (repair && newest > 0) await advanceStamps(pool, newest);
    report.qdrantPoints += points.length;
    const loaded = await sync.load(pool, points.map((point) => qdrantPointId(point.id)));
    const rows = new Map([...loaded].map(([id, row]) => [pointIdText(id), row]));
    const extra = points.filter((point) => !rows.has(point.id)).map((point) => point.id);
    const stale = points.filter((point) => rows.has(point.id) && !matchesRow(point.payload, rows.get(point.id)!)).map((point) => point.id);
    const pending = await pendingKeys(pool, collection, [...extra, ...stale]);
    report.extra += extra.filter((id) => !pending.has(id)).length;
    report.stale += stale.filter((id) => !pending.has(id)).length;
    report.inFlight += pending.size;
    if (repair) await enqueuePointChanges(pool, collection, [...extra, ...stale].filter((id) => !pending.has(id)));
    options.onProgress?.({ phase: "qdrant", done: report.qdrantPoints, total: qdrantTotal });
    offset = page.next_page_offset === null || page.next_page_offset === undefined ? undefined : (page.next_page_offset as string | number);
    if (offset === undefined) break;
  }

  let after: PointId | null = null;
  for (;;) {
    options.signal?.throwIfAborted();
    const keys = await sync.page(pool, after, pageSize);
    if (keys.length === 0) break;
    after = keys[keys.length - 1]!.id;
    report.postgresPoints += keys.length;
    const ids = keys.map((key) => pointIdText(key.id));
    const found = exists ? await qdrant.retrieve(collection, { ids: ids.map(qdrantPointId), with_payload: [OWNER_KEY], with_vector: false, consistency }) : [];
    // A point without our owner is not ours to trust: re-writing it adopts it (or restores ours).
    const present = new Set(found.filter((point) => point.payload?.[OWNER_KEY] === owner).map((point) => pointIdText(point.id)));
    const missing = ids.filter((id) => !present.has(id));
    const pending = await pendingKeys(pool, collection, missing);
    report.missing += missing.filter((id) => !pending.has(id)).length;
    report.inFlight += pending.size;
    if (repair) await enqueuePointChanges(pool, collection, missing.filter((id) => !pending.has(id)));
    options.onProgress?.({ phase: "postgres", done: report.postgresPoints, total: null });
  }

  return report;
}

/**
 * Whether a point's payload is what the relay writes for the row: its hash, a version stamp, and
 * each key of its payload as JSON carries it. A point without a stamp (written before stamps
 * existed) is stale: re-writing it stamps it, so a late write can no longer replace it.
 */
function matchesRow(payload: Record<string, unknown>, row: PointState): boolean {
  if (payload[HASH_KEY] !== row.hash || !Number.isSafeInteger(payload[STAMP_KEY])) return false;
  const expected = JSON.parse(JSON.stringify(row.payload)) as Record<string, unknown>;
  return Object.entries(expected).every(([key, value]) => isDeepStrictEqual(payload[key], value));
}
