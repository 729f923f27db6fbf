import { QdrantClient } from "@qdrant/js-client-rest";
import { ConfigError } from "../config.ts";
import { OWNER_KEY, type Distance } from "./sync.ts";
import { redactCredentials, splitCredentials } from "../redact.ts";

export type { QdrantClient };

export interface QdrantSettings {
  /** QDRANT_URL; credentials in it (`https://user:password@host`, for a proxy) are sent as Basic authorization. */
  url: string;
  /** Sent as the `api-key` header. */
  apiKey?: string | undefined;
  /** Deadline of every request, ms; enforced by the client with an AbortSignal. */
  timeoutMs: number;
}

/** One client per process: it keeps a pool of keep-alive sockets (undici). */
export function createQdrantClient(settings: QdrantSettings): QdrantClient {
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

export interface CollectionSpec {
  name: string;
  size: number;
  distance: Distance;
}

/**
 * Creates the collection when missing, with a keyword index on the owner key (the reconciler
 * scrolls by owner). An existing collection with another vector size or distance is a
 * configuration error: writing into it would fail every point. One made by an earlier version
 * gets the owner index added.
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
