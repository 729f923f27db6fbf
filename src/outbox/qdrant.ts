import type { QdrantClient, Schemas } from "@qdrant/js-client-rest";
import { ConfigError } from "../config.ts";
import { OWNER_KEY, STAMP_KEY, type Distance } from "./sync.ts";
import { redactCredentials, splitCredentials } from "../redact.ts";

export type { QdrantClient };

/** Qdrant's write ordering (`ordering` of every write): how replicas of a shard order concurrent writes. */
export type WriteOrdering = "weak" | "medium" | "strong";
export type { ReadConsistency } from "../config.ts";

/** Conditional updates (`update_filter` on upserts) came with Qdrant 1.16.0. */
export const MIN_QDRANT_VERSION = "1.16.0";

export interface QdrantSettings {
  /** QDRANT_URL; credentials in it (`https://user:password@host`, for a proxy) are sent as Basic authorization. */
  url: string;
  /** Sent as the `api-key` header. */
  apiKey?: string | undefined;
  /** Deadline of every request, ms; enforced by the client with an AbortSignal. */
  timeoutMs: number;
}

/**
 * One client per process: it keeps a pool of keep-alive sockets (undici). The client and undici
 * are imported here, on the first call, not with this module: they are a fifth of a process's
 * start, and most commands, and workers without syncs, never talk to Qdrant.
 */
export async function createQdrantClient(settings: QdrantSettings): Promise<QdrantClient> {
  const { QdrantClient } = await import("@qdrant/js-client-rest");
  // fetch refuses a URL with credentials (and would quote it in its error): they go in a header.
  const { url, authorization } = splitCredentials(settings.url);
  return new QdrantClient({
    url,
    // The key as a plain header: given as apiKey over http, the client prints a warning of its
    // own to stdout, outside the log (openContext logs it instead).
    headers: { ...(settings.apiKey ? { "api-key": settings.apiKey } : {}), ...(authorization ? { authorization } : {}) },
    timeout: settings.timeoutMs,
    // The version probe is a request at construction that nobody awaits; we check by using it.
    checkCompatibility: false,
  });
}

/**
 * The relay's writes of points: the REST client's `upsert` and `delete`, or the same requests
 * over gRPC (createGrpcPointWrites, QDRANT_GRPC_URL). Both wait for the write and order it.
 */
export interface PointWrites {
  upsert(
    collection: string,
    request: { wait: true; ordering: WriteOrdering; points: Array<{ id: string | number; vector: readonly number[]; payload: Record<string, unknown> }>; update_filter: Schemas["Filter"] },
  ): Promise<unknown>;
  delete(collection: string, request: { wait: true; ordering: WriteOrdering; filter: Schemas["Filter"] }): Promise<unknown>;
  /** Checks, once before the first write, that the other end is a recent enough Qdrant (a ConfigError if not). */
  check?(): Promise<void>;
  /** Closes its connections; the relay calls it when it stops. */
  close?(): void;
}

/** The point writes over REST: vectors printed at float32 precision (float32Vector), as JSON. */
export function restPointWrites(client: QdrantClient): PointWrites {
  return {
    upsert: (collection, request) => client.upsert(collection, { ...request, points: request.points.map((point) => ({ ...point, vector: float32Vector(point.vector) })) }),
    delete: (collection, request) => client.delete(collection, request),
  };
}

export interface CollectionSpec {
  name: string;
  size: number;
  distance: Distance;
}

/**
 * Checks that the server has the conditional updates the relay's writes rely on; an older one is
 * a ConfigError (one line). A server that does not say its version (no version, or a proxy that
 * refuses GET / with a 4xx) is let through; an unreachable one throws as any request does.
 */
export async function checkQdrantVersion(client: QdrantClient): Promise<void> {
  let version: string | undefined;
  try {
    ({ version } = await client.versionInfo());
  } catch (error) {
    const status = statusOf(error);
    if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429) return;
    throw error;
  }
  checkVersion(version);
}

/** A ConfigError if `version` (a server's, e.g. "1.15.2") is older than MIN_QDRANT_VERSION; one it cannot read passes. */
export function checkVersion(version: string | undefined, how = ""): void {
  const parts = /^(\d+)\.(\d+)\.(\d+)/.exec(version ?? "");
  if (!parts) return;
  const [major, minor, patch] = parts.slice(1).map(Number) as [number, number, number];
  const [wantMajor, wantMinor, wantPatch] = MIN_QDRANT_VERSION.split(".").map(Number) as [number, number, number];
  if (major * 1e6 + minor * 1e3 + patch < wantMajor * 1e6 + wantMinor * 1e3 + wantPatch) {
    throw new ConfigError(`Qdrant ${version}${how ? ` ${how}` : ""} is too old: pgconverge needs ${MIN_QDRANT_VERSION} or later (conditional updates, update_filter)`);
  }
}

/**
 * The condition under which a write of these stamped points may replace (or delete) the stored
 * point of the same id: the stored point carries no stamp (written before stamps existed), is not
 * this database's, or has a smaller stamp. Qdrant's update_filter is one filter for the whole
 * request, so each point has a clause of its own (its id and its stamp). A point that does not
 * exist is inserted by an upsert whatever the filter says.
 */
export function olderThan(owner: string, points: ReadonlyArray<{ id: string | number; stamp: number }>) {
  return {
    should: [
      { is_empty: { key: STAMP_KEY } },
      { must_not: [{ key: OWNER_KEY, match: { value: owner } }] },
      ...points.map((point) => ({ must: [{ has_id: [point.id] }, { key: STAMP_KEY, range: { lt: point.stamp } }] })),
    ],
  };
}

/**
 * Creates the collection when missing, with a keyword index on the owner key (the reconciler
 * scrolls by owner) and an integer index on the version stamp (every write is conditional on
 * it). An existing collection with another vector size or distance is a configuration error:
 * writing into it would fail every point. One made by an earlier version gets the indexes added.
 */
export async function ensureCollection(client: QdrantClient, spec: CollectionSpec): Promise<"created" | "exists"> {
  const { exists } = await client.collectionExists(spec.name);
  let outcome: "created" | "exists" = "exists";
  if (!exists) {
    try {
      await client.createCollection(spec.name, { vectors: { size: spec.size, distance: spec.distance } });
      outcome = "created";
    } catch (error) {
      // Another worker created it between our check and our create.
      if (statusOf(error) !== 409) throw error;
    }
  }
  const info = await client.getCollection(spec.name);
  const vectors = info.config.params.vectors as { size?: number; distance?: string } | undefined;
  if (vectors?.size !== spec.size || vectors?.distance !== spec.distance) {
    throw new ConfigError(
      `Qdrant collection "${spec.name}" has ${vectors?.size ?? "unnamed/multiple"}-dimensional ${vectors?.distance ?? "?"} vectors, ` +
        `but its sync declares ${spec.size}-dimensional ${spec.distance}; sync to another collection or recreate this one`,
    );
  }
  // Creating an index that exists is a no-op in Qdrant; asking first saves the write.
  if (!info.payload_schema?.[OWNER_KEY]) await client.createPayloadIndex(spec.name, { field_name: OWNER_KEY, field_schema: "keyword", wait: true });
  if (!info.payload_schema?.[STAMP_KEY]) await client.createPayloadIndex(spec.name, { field_name: STAMP_KEY, field_schema: "integer", wait: true });
  return outcome;
}

export function statusOf(error: unknown): number | undefined {
  const status = (error as { status?: unknown } | null)?.status;
  return typeof status === "number" ? status : undefined;
}

/** Seconds to wait from a 429's Retry-After, as the client surfaces it. */
export function retryAfterMs(error: unknown): number | undefined {
  const seconds = (error as { retry_after?: unknown } | null)?.retry_after;
  return typeof seconds === "number" && Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}

/** One line naming what Qdrant said, e.g. `Qdrant 400: Wrong input: Vector dimension error: expected dim: 768, got 3`. */
export function describeQdrantError(error: unknown): string {
  const status = statusOf(error);
  const data = (error as { data?: { status?: { error?: unknown } } } | null)?.data;
  const said = typeof data?.status?.error === "string" ? data.status.error : undefined;
  if (status !== undefined) return redactCredentials(`Qdrant ${status}: ${said ?? (error as Error).message}`.replace(/\s+/g, " "));
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
  const detail = typeof cause?.code === "string" ? `${(error as Error).message} (${cause.code})` : (error as Error)?.message;
  return redactCredentials(`Qdrant unreachable: ${detail ?? String(error)}`.replace(/\s+/g, " "));
}

/** The index of the vector's first value that is not a finite float32 (NaN, ±Infinity, beyond ±3.4e38), or -1. */
export function nonFloat32At(vector: readonly number[]): number {
  for (let i = 0; i < vector.length; i++) if (!Number.isFinite(Math.fround(vector[i]!))) return i;
  return -1;
}

/** Exact powers of ten as doubles (10^22 is the last one a double holds exactly). */
const POW10 = Array.from({ length: 23 }, (_, exponent) => 10 ** exponent);

/**
 * The vector as doubles that JSON prints at float32 precision: each value is rounded to float32
 * (what Qdrant stores) and replaced by the double of the shortest decimal that reads back as
 * the same float32, so `0.1f` goes on the wire as `0.1`, not `0.10000000149011612`. Values
 * from a `real[]` column come back unchanged (Postgres prints float4 at its shortest already).
 * Rounding to 6, 7, 8, then 9 significant digits with exact powers of ten (an integer divided
 * by an exact power of ten is the double nearest that decimal, as parsing it would give) costs a
 * few arithmetic operations per value, several times cheaper than `toPrecision`; 9 digits
 * always identify a float32, and 6 never miss a shorter decimal (a float32's half step is
 * below a 6-digit decimal's). bench/vectorJson.ts measures it.
 */
export function float32Vector(vector: readonly number[]): number[] {
  const out = new Array<number>(vector.length);
  for (let i = 0; i < vector.length; i++) out[i] = shortestFloat32(vector[i]!);
  return out;
}

function shortestFloat32(value: number): number {
  const single = Math.fround(value);
  if (single === 0 || !Number.isFinite(single)) return single;
  const exponent = Math.floor(Math.log10(Math.abs(single)));
  // Already a decimal of at most 9 digits (a real[] column's values): one check, kept as is.
  if (roundTo(value, 9, exponent) === value) return value;
  for (let digits = 6; digits <= 9; digits++) {
    const candidate = roundTo(single, digits, exponent);
    if (Math.fround(candidate) === single) return candidate;
  }
  return single;
}

/** `value` rounded to `digits` significant digits, as the double nearest that decimal. */
function roundTo(value: number, digits: number, exponent: number): number {
  const scale = digits - 1 - exponent;
  if (scale >= 0 && scale <= 22) return Math.round(value * POW10[scale]!) / POW10[scale]!;
  if (scale < 0 && scale >= -22) return Math.round(value / POW10[-scale]!) * POW10[-scale]!;
  return Number(value.toPrecision(digits)); // below 1e-13 or above 1e22: rare, exact the slow way
}
