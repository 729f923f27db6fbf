import type { Schemas } from "@qdrant/js-client-rest";
import type { UpsertPoints } from "@qdrant/js-client-grpc";
import { splitCredentials } from "../redact.ts";
import type { PointWrites, QdrantSettings, WriteOrdering } from "./qdrant.ts";

type RestFilter = Schemas["Filter"];
type RestCondition = Schemas["Condition"];
// The client takes plain objects for its messages (it creates them); these name their shapes.
type Filter = NonNullable<UpsertPoints["updateFilter"]>;
type Condition = Filter["must"][number];
type PointStruct = UpsertPoints["points"][number];
type PointId = NonNullable<PointStruct["id"]>;
type Value = PointStruct["payload"][string];

/** Qdrant's HTTP status for a gRPC status code, as Qdrant maps them; unreachable ones have none. */
const HTTP_STATUS_OF_CODE: Record<number, number> = {
  2: 500, // Unknown
  3: 400, // InvalidArgument
  5: 404, // NotFound
  6: 409, // AlreadyExists
  7: 403, // PermissionDenied
  8: 429, // ResourceExhausted
  9: 400, // FailedPrecondition
  10: 409, // Aborted
  11: 400, // OutOfRange
  12: 501, // Unimplemented
  13: 500, // Internal
  15: 500, // DataLoss
  16: 401, // Unauthenticated
};

/**
 * A failed gRPC write, shaped as the REST client's errors are (`status`, `data.status.error`,
 * `retry_after`), so the relay tells permanent from transient failures, finds a culprit point and
 * honours Retry-After whichever way its writes go. Unavailable, deadline and cancel codes carry
 * no status: like a refused REST connection, they are transient.
 */
export class QdrantGrpcError extends Error {
  readonly status: number | undefined;
  readonly data: { status: { error: string } };
  readonly retry_after: number | undefined;

  constructor(error: { message: string; rawMessage?: string; code: number; retry_after?: unknown }) {
    super(error.message, { cause: error });
    this.name = "QdrantGrpcError";
    this.status = HTTP_STATUS_OF_CODE[error.code];
    this.data = { status: { error: error.rawMessage ?? error.message } };
    this.retry_after = typeof error.retry_after === "number" ? error.retry_after : undefined;
  }
}

/**
 * The relay's point writes over Qdrant's gRPC API (QDRANT_GRPC_URL, port 6334) with the official
 * client. A vector goes as packed float32 (3 KiB for 768 dimensions, copied) instead of JSON
 * (about 7.4 KiB printed here and parsed there): bench/vectorJson.ts and BENCHMARKS.md measure
 * both. Collections, the version check and the reconciler stay on REST. The requests are the
 * REST ones, translated: the same points, payloads, conditional `update_filter` and ordering.
 */
export async function createGrpcPointWrites(grpcUrl: string, settings: Omit<QdrantSettings, "url">): Promise<PointWrites> {
  const grpc = await import("@qdrant/js-client-grpc");
  const { url, authorization } = splitCredentials(grpcUrl);
  const points = new grpc.QdrantClient({
    url,
    // As over REST: the key as a plain header (the client warns on stdout of a key over http).
    headers: { ...(settings.apiKey ? { "api-key": settings.apiKey } : {}), ...(authorization ? { authorization } : {}) },
    timeout: settings.timeoutMs,
    checkCompatibility: false,
    // Float32 bytes of embeddings barely compress: gzip would cost more CPU than it saves.
    compression: false,
  }).api("points");
  const ordering = (value: WriteOrdering) => ({ type: { weak: grpc.WriteOrderingType.Weak, medium: grpc.WriteOrderingType.Medium, strong: grpc.WriteOrderingType.Strong }[value] });
  const failed = (error: unknown): never => {
    // The client's own 429 error (with Retry-After) fails connect's instanceof checks (theirs and
    // ours), so connect wraps it as Unknown: the client's error is then the cause.
    const cause = (error as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
    if (cause?.code === grpc.ConnectErrorCode.ResourceExhausted) throw new QdrantGrpcError(cause as ConstructorParameters<typeof QdrantGrpcError>[0]);
    if (error instanceof grpc.ConnectError && HTTP_STATUS_OF_CODE[error.code] !== undefined) throw new QdrantGrpcError(error);
    throw error;
  };
  return {
    async upsert(collection, request) {
      await points
        .upsert({
          collectionName: collection,
          wait: request.wait,
          ordering: ordering(request.ordering),
          points: request.points.map(pointStruct),
          updateFilter: grpcFilter(request.update_filter),
        })
        .catch(failed);
    },
    async delete(collection, request) {
      await points
        .delete({
          collectionName: collection,
          wait: request.wait,
          ordering: ordering(request.ordering),
          points: { pointsSelectorOneOf: { case: "filter", value: grpcFilter(request.filter)! } },
        })
        .catch(failed);
    },
  };
}

function pointId(id: string | number): PointId {
  return (typeof id === "number" ? { pointIdOptions: { case: "num", value: BigInt(id) } } : { pointIdOptions: { case: "uuid", value: id } }) as PointId;
}

function pointStruct(point: { id: string | number; vector: readonly number[]; payload: Record<string, unknown> }): PointStruct {
  return {
    id: pointId(point.id),
    vectors: { vectorsOptions: { case: "vector", value: { vector: { case: "dense", value: { data: point.vector } } } } },
    payload: Object.fromEntries(Object.entries(point.payload).map(([key, value]) => [key, jsonValue(value)])),
  } as PointStruct;
}

/** A JSON payload value as Qdrant's gRPC Value: integers as integer_value, as Qdrant reads JSON. */
function jsonValue(value: unknown): Value {
  const kind = (() => {
    if (value === null || value === undefined) return { case: "nullValue", value: 0 };
    if (typeof value === "boolean") return { case: "boolValue", value };
    if (typeof value === "string") return { case: "stringValue", value };
    if (typeof value === "number") return Number.isSafeInteger(value) ? { case: "integerValue", value: BigInt(value) } : { case: "doubleValue", value };
    if (typeof value === "bigint") return { case: "integerValue", value };
    if (Array.isArray(value)) return { case: "listValue", value: { values: value.map(jsonValue) } };
    if (typeof value === "object") return { case: "structValue", value: { fields: Object.fromEntries(Object.entries(value).map(([key, field]) => [key, jsonValue(field)])) } };
    throw new TypeError(`payload value of type ${typeof value} cannot be sent to Qdrant`);
  })();
  return { kind } as Value;
}

/** The REST filter as gRPC's, for the conditions the relay writes with (olderThan, has_id). */
function grpcFilter(filter: RestFilter | null | undefined): Filter | undefined {
  if (!filter) return undefined;
  const list = (conditions: RestFilter["must"]) => (conditions === undefined || conditions === null ? [] : Array.isArray(conditions) ? conditions : [conditions]).map(grpcCondition);
  return { must: list(filter.must), should: list(filter.should), mustNot: list(filter.must_not) } as Filter;
}

function grpcCondition(condition: RestCondition): Condition {
  const c = condition as Record<string, unknown>;
  const oneOf = (() => {
    if ("must" in c || "should" in c || "must_not" in c) return { case: "filter", value: grpcFilter(c as RestFilter) };
    if ("has_id" in c) return { case: "hasId", value: { hasId: (c.has_id as Array<string | number>).map(pointId) } };
    if ("is_empty" in c) return { case: "isEmpty", value: { key: (c.is_empty as { key: string }).key } };
    if (typeof c.key === "string" && c.range) return { case: "field", value: { key: c.key, range: c.range } };
    if (typeof c.key === "string" && c.match && typeof c.match === "object" && "value" in c.match) {
      const value = (c.match as { value: unknown }).value;
      const matchValue =
        typeof value === "string" ? { case: "keyword", value } : typeof value === "boolean" ? { case: "boolean", value } : { case: "integer", value: BigInt(value as number) };
      return { case: "field", value: { key: c.key, match: { matchValue } } };
    }
    throw new TypeError(`filter condition ${JSON.stringify(condition)} has no gRPC translation here`);
  })();
  return { conditionOneOf: oneOf } as Condition;
}
