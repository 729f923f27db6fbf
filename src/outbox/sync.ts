import type { CommonQueryMethods } from "slonik";
import { ConfigError } from "../config.ts";

/**
 * A Qdrant point id: a UUID string or an unsigned integer (Qdrant accepts nothing else), as a
 * number or a bigint (slonik reads int8 columns as bigint). Integers are limited to 2^53 - 1:
 * Qdrant's JSON numbers beyond it lose digits in JavaScript. Keys passed to `load` are strings
 * (UUIDs) and numbers.
 */
export type PointId = string | number | bigint;

/** What a point must look like, read from the application's tables. */
export interface PointState {
  vector: number[];
  /** The application's payload. Keys starting with `pgconverge_` are reserved (owner, hash, version). */
  payload: Record<string, unknown>;
  /** A hash of what the point is made from; the reconciler compares it with the point's copy to find stale points. */
  hash: string;
}

/**
 * A sync: one table (or query) of the application mirrored into one Qdrant collection.
 * The relay, the reconciler and the `outbox` and `reconcile` commands work from these.
 */
export interface SyncDefinition {
  /** The Qdrant collection; also the outbox key space (`enqueuePointChanges(tx, collection, ids)`). */
  collection: string;
  /** Created with these when missing; an existing collection with others is refused at start. Distance defaults to Cosine. */
  vectors: { size: number; distance?: Distance };
  /**
   * The current point of each key that should exist in Qdrant; a key left out of the map has no
   * point (its row was deleted, or is not ready yet) and its point is deleted. Called with at
   * most one relay batch (or one reconcile page) of keys.
   */
  load(db: CommonQueryMethods, ids: readonly PointId[]): Promise<ReadonlyMap<PointId, PointState>>;
  /**
   * Up to `limit` keys that should have a point, with their hashes, in a stable order after the
   * key `after` (null: from the start). Keyset pagination: the reconciler's memory stays bounded.
   */
  page(db: CommonQueryMethods, after: PointId | null, limit: number): Promise<ReadonlyArray<{ id: PointId; hash: string }>>;
}

export type Distance = "Cosine" | "Dot" | "Euclid" | "Manhattan";

/** A definition checked by defineSync, with the distance filled in. */
export interface Sync extends SyncDefinition {
  vectors: { size: number; distance: Distance };
}

const DISTANCES: readonly Distance[] = ["Cosine", "Dot", "Euclid", "Manhattan"];
const COLLECTION_NAME = /^[A-Za-z0-9_-]{1,255}$/;

/** Checks a sync declaration; a mistake is a ConfigError with one line naming the collection. */
export function defineSync(definition: SyncDefinition): Sync {
  const name = typeof definition?.collection === "string" ? definition.collection : "";
  const fail = (problem: string) => {
    throw new ConfigError(`sync${name ? ` "${name}"` : ""}: ${problem}`);
  };
  if (!COLLECTION_NAME.test(name)) fail(`collection must be 1 to 255 letters, digits, _ or - (got ${JSON.stringify(definition?.collection)})`);
  const size = definition.vectors?.size;
  if (!Number.isInteger(size) || size < 1 || size > 65_536) fail(`vectors.size must be a whole number from 1 to 65536 (got ${JSON.stringify(size)})`);
  const distance = definition.vectors.distance ?? "Cosine";
  if (!DISTANCES.includes(distance)) fail(`vectors.distance must be one of ${DISTANCES.join(", ")} (got ${JSON.stringify(distance)})`);
  if (typeof definition.load !== "function") fail("load(db, ids) is missing");
  if (typeof definition.page !== "function") fail("page(db, after, limit) is missing");
  return { ...definition, vectors: { size, distance } };
}

/** Several syncs together: one collection each. */
export function checkSyncs(syncs: readonly Sync[]): void {
  const seen = new Set<string>();
  for (const sync of syncs) {
    if (seen.has(sync.collection)) throw new ConfigError(`sync "${sync.collection}": declared twice; one collection has one sync`);
    seen.add(sync.collection);
  }
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const UNSIGNED = /^(0|[1-9][0-9]{0,15})$/;

/**
 * The outbox's text form of a point id: a UUID lowercase with hyphens, an integer in decimal.
 * One spelling per id, so (collection, point_id) stays one row per point. Throws on anything
 * Qdrant would refuse.
 */
export function pointIdText(id: PointId): string {
  if (typeof id === "string" && UUID.test(id)) {
    const hex = id.replace(/-/g, "").toLowerCase();
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }
  const text = typeof id === "number" || typeof id === "bigint" ? String(id) : typeof id === "string" ? id : "";
  if (UNSIGNED.test(text) && Number.isSafeInteger(Number(text))) return text;
  throw new TypeError(`point id ${JSON.stringify(typeof id === "bigint" ? String(id) : id)} is neither a UUID nor an unsigned integer up to 2^53 - 1`);
}

/** The id as Qdrant's JSON wants it: integers as numbers, UUIDs as strings. */
export function qdrantPointId(text: string): string | number {
  return UNSIGNED.test(text) ? Number(text) : text;
}

/**
 * Payload keys pgconverge writes into every point: which database wrote it, the row's hash, and
 * the version stamp of the write (an integer that grows with every sync of the key; a write
 * never replaces a point with a greater one).
 */
export const OWNER_KEY = "pgconverge_owner";
export const HASH_KEY = "pgconverge_hash";
export const STAMP_KEY = "pgconverge_version";
