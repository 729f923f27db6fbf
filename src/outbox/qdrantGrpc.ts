import type { GenService } from "@bufbuild/protobuf/codegenv2";
import type { Client } from "@connectrpc/connect";
import type { DeletePointsSchema, HealthCheckReplySchema, HealthCheckRequestSchema, PointsOperationResponseSchema, UpsertPoints, UpsertPointsSchema } from "@qdrant/js-client-grpc";
import type { Schemas } from "@qdrant/js-client-rest";
import { ConfigError } from "../config.ts";
import { splitCredentials } from "../redact.ts";
import { checkVersion, type PointWrites, type QdrantSettings, type WriteOrdering } from "./qdrant.ts";

type RestFilter = Schemas["Filter"];
type RestCondition = Schemas["Condition"];
// The client takes plain objects for its messages (it creates them); these name their shapes.
type Filter = NonNullable<UpsertPoints["updateFilter"]>;
type Condition = Filter["must"][number];
type PointStruct = UpsertPoints["points"][number];
type PointId = NonNullable<PointStruct["id"]>;
type Value = PointStruct["payload"][string];

/** The two services of Qdrant's gRPC API the relay calls, as the official client's descriptors name them. */
export type PointsService = GenService<{
  upsert: { methodKind: "unary"; input: typeof UpsertPointsSchema; output: typeof PointsOperationResponseSchema };
  delete: { methodKind: "unary"; input: typeof DeletePointsSchema; output: typeof PointsOperationResponseSchema };
}>;
export type QdrantService = GenService<{ healthCheck: { methodKind: "unary"; input: typeof HealthCheckRequestSchema; output: typeof HealthCheckReplySchema } }>;

/**
 * The Points and Qdrant services from the official client's file descriptors. The package
 * exports the descriptor of qdrant.proto, not the service files it imports; they are its
 * dependencies.
 */
export function qdrantServices(grpc: typeof import("@qdrant/js-client-grpc")): { points: PointsService; qdrant: QdrantService } {
  const files = [grpc.file_qdrant, ...grpc.file_qdrant.dependencies];
  const service = (typeName: string) => {
    const found = files.flatMap((file) => file.services).find((each) => each.typeName === typeName);
    if (!found) throw new Error(`@qdrant/js-client-grpc has no ${typeName} service`);
    return found;
  };
  return { points: service("qdrant.Points") as PointsService, qdrant: service("qdrant.Qdrant") as QdrantService };
}

/**
 * The REST status Qdrant answers for the same failure as this gRPC code, where it is one the
 * relay must tell apart: a refused point (400) is permanent, a rate limit (429) and Qdrant's own
 * failures (5xx, such as a shard being moved, FAILED_PRECONDITION) are transient. Unavailable,
 * deadline, cancel and Aborted (connect's code for a reset connection) carry none: like a refused
 * REST connection, they are transient.
 */
const HTTP_STATUS_OF_CODE: Record<number, number> = {
  2: 500, // Unknown
  3: 400, // InvalidArgument
  5: 404, // NotFound
  6: 409, // AlreadyExists
  7: 403, // PermissionDenied
  8: 429, // ResourceExhausted
  9: 500, // FailedPrecondition
  11: 400, // OutOfRange
  12: 501, // Unimplemented
  13: 500, // Internal
  15: 500, // DataLoss
  16: 401, // Unauthenticated
};

/**
 * A failed gRPC write, shaped as the REST client's errors are (`status`, `data.status.error`,
 * `retry_after`), so the relay tells permanent from transient failures, finds a culprit point and
 * honours Retry-After whichever way its writes go.
 */
export class QdrantGrpcError extends Error {
  readonly status: number | undefined;
  readonly data: { status: { error: string } };
  readonly retry_after: number | undefined;

  constructor(error: { message: string; rawMessage: string; code: number; metadata: Headers }) {
    super(error.message, { cause: error });
    this.name = "QdrantGrpcError";
    this.status = HTTP_STATUS_OF_CODE[error.code];
    this.data = { status: { error: error.rawMessage } };
    const retryAfter = Number(error.metadata.get("retry-after") ?? Number.NaN);
    this.retry_after = Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : undefined;
  }
}

/**
 * HTTP/2 pings while writes are open, and one before a connection idle for longer is used
 * again: a connection dropped silently (a NAT, a load balancer) is replaced within seconds, not
 * at the next TCP timeout. The ping's own timeout is well under a request's deadline, so the
 * first write after such a drop gets a new connection rather than a timeout.
 */
const PING_INTERVAL_MS = 15_000;
const PING_TIMEOUT_MS = 3_000;
/** An unused connection is closed after this long. */
const IDLE_CONNECTION_MS = 60_000;

/**
 * The relay's point writes over Qdrant's gRPC API (QDRANT_GRPC_URL, port 6334), with the
 * official client's service descriptors and message types on connect's gRPC transport (its
 * QdrantClient cannot ping an idle connection, be closed, or say a Retry-After over 9 s). A
 * vector goes as packed float32 (3 KiB for 768 dimensions, copied) instead of JSON (about 7.4
 * KiB printed here and parsed there); BENCHMARKS.md measures both. Collections and the
 * reconciler stay on REST. The requests are the REST ones, translated: the same points,
 * payloads (as JSON would carry them), conditional `update_filter` and ordering.
 */
export async function createGrpcPointWrites(grpcUrl: string, settings: Omit<QdrantSettings, "url">): Promise<PointWrites> {
  const [grpc, connect, { createGrpcTransport, Http2SessionManager }] = await Promise.all([
    import("@qdrant/js-client-grpc"),
    import("@connectrpc/connect"),
    import("@connectrpc/connect-node"),
  ]);
  const services = qdrantServices(grpc);
  const { url, authorization } = splitCredentials(grpcUrl);
  const headers: Record<string, string> = { ...(settings.apiKey ? { "api-key": settings.apiKey } : {}), ...(authorization ? { authorization } : {}) };
  const sessions = new Http2SessionManager(url, { pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: PING_TIMEOUT_MS, idleConnectionTimeoutMs: IDLE_CONNECTION_MS });
  const transport = createGrpcTransport({
    baseUrl: url,
    sessionManager: sessions,
    defaultTimeoutMs: settings.timeoutMs,
    interceptors: [
      (next) => (request) => {
        for (const [name, value] of Object.entries(headers)) request.header.set(name, value);
        return next(request);
      },
    ],
  });
  const points: Client<PointsService> = connect.createClient(services.points, transport);
  const qdrant: Client<QdrantService> = connect.createClient(services.qdrant, transport);
  const ordering = (value: WriteOrdering) => ({ type: { weak: grpc.WriteOrderingType.Weak, medium: grpc.WriteOrderingType.Medium, strong: grpc.WriteOrderingType.Strong }[value] });
  const failed = (error: unknown): never => {
    if (error instanceof connect.ConnectError && HTTP_STATUS_OF_CODE[error.code] !== undefined) throw new QdrantGrpcError(error);
    throw error;
  };
  return {
    async check() {
      let version: string;
      try {
        ({ version } = await qdrant.healthCheck({}));
      } catch (error) {
        // Something answers HTTP/2 there, but not Qdrant's gRPC API (a REST port, a proxy path).
        if (error instanceof connect.ConnectError && error.code === connect.Code.Unimplemented) {
          throw new ConfigError(`QDRANT_GRPC_URL does not serve Qdrant's gRPC API (${error.rawMessage}); it is Qdrant's gRPC port, 6334 by default`);
        }
        // As over REST, a refusal (a proxy's, an API key's) is left for the writes to report.
        const status = error instanceof connect.ConnectError ? HTTP_STATUS_OF_CODE[error.code] : undefined;
        if (status !== undefined && status >= 400 && status < 500 && status !== 429) return;
        return failed(error);
      }
      checkVersion(version, "over gRPC");
    },
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
    close() {
      sessions.abort();
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
    payload: Object.fromEntries(Object.entries(asJson(point.payload)).map(([key, value]) => [key, jsonValue(value)])),
  } as PointStruct;
}

const INT64 = { min: -(2n ** 63n), max: 2n ** 63n - 1n };

/**
 * The payload as JSON carries it over REST, so both ways store the same: a Date as its string,
 * a key whose value is undefined left out, NaN and Infinity as null, and a BigInt as an integer
 * where Node.js can print one (JSON.rawJSON, as the REST client does). An integer beyond 2^53
 * keeps its digits (read back as a BigInt).
 */
function asJson(payload: Record<string, unknown>): Record<string, unknown> {
  // Most payloads are flat strings and numbers, which JSON gives back as they are: the round
  // trip (its reviver called on every key) was the largest item of the gRPC writer's own time.
  if (Object.values(payload).every(isJsonAsIs)) return payload;
  const rawJson = (JSON as { rawJSON?: (text: string) => unknown }).rawJSON;
  const text = JSON.stringify(payload, rawJson ? (_key, value: unknown) => (typeof value === "bigint" ? rawJson(String(value)) : value) : undefined);
  const reviver = (_key: string, value: unknown, context?: { source?: string }) =>
    typeof value === "number" && Number.isInteger(value) && !Number.isSafeInteger(value) && context?.source && /^-?\d+$/.test(context.source) ? BigInt(context.source) : value;
  return JSON.parse(text, reviver as (key: string, value: unknown) => unknown) as Record<string, unknown>;
}

/** A value JSON prints and reads back unchanged, nested in nothing (an integer beyond 2^53 is read back as a BigInt). */
function isJsonAsIs(value: unknown): boolean {
  if (typeof value === "number") return Number.isSafeInteger(value) || (Number.isFinite(value) && !Number.isInteger(value));
  return value === null || typeof value === "string" || typeof value === "boolean";
}

/** A value of parsed JSON as Qdrant's gRPC Value: integers as integer_value, as Qdrant reads JSON. */
function jsonValue(value: unknown): Value {
  const kind = (() => {
    if (value === null) return { case: "nullValue", value: 0 };
    if (typeof value === "boolean") return { case: "boolValue", value };
    if (typeof value === "string") return { case: "stringValue", value };
    if (typeof value === "number") return Number.isSafeInteger(value) ? { case: "integerValue", value: BigInt(value) } : { case: "doubleValue", value };
    if (typeof value === "bigint") return value >= INT64.min && value <= INT64.max ? { case: "integerValue", value } : { case: "doubleValue", value: Number(value) };
    if (Array.isArray(value)) return { case: "listValue", value: { values: value.map(jsonValue) } };
    return { case: "structValue", value: { fields: Object.fromEntries(Object.entries(value as object).map(([key, field]) => [key, jsonValue(field)])) } };
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
