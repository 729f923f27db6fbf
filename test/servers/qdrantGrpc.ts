// Qdrant's gRPC API (its port 6334) in front of a FakeQdrant, for the relay's writes over gRPC:
// Points.Upsert, Points.Delete and Qdrant.HealthCheck, served by connect-node with the service
// definitions shipped in the official @qdrant/js-client-grpc.
// Each request is translated to its REST body and served by the FakeQdrant (same points, same
// filter semantics, same counters under the REST route names, same fault schedule); the other
// RPCs answer Unimplemented.
import { createServer, type Http2Server, type Http2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { WriteOrderingType, type DeletePoints, type UpsertPoints } from "@qdrant/js-client-grpc";
import { qdrantServices } from "../../src/outbox/qdrantGrpc.ts";
import { FakeQdrant, HttpError } from "./qdrant.ts";

const { points: Points, qdrant: Qdrant } = qdrantServices(await import("@qdrant/js-client-grpc"));

type Filter = NonNullable<UpsertPoints["updateFilter"]>;
type Condition = Filter["must"][number];
type PointStruct = UpsertPoints["points"][number];
type PointId = NonNullable<PointStruct["id"]>;
type Value = PointStruct["payload"][string];

/** Qdrant's gRPC code for an HTTP status, as Qdrant maps them. */
function codeOf(status: number): Code {
  if (status === 400) return Code.InvalidArgument;
  if (status === 401) return Code.Unauthenticated;
  if (status === 403) return Code.PermissionDenied;
  if (status === 404) return Code.NotFound;
  if (status === 409) return Code.AlreadyExists;
  if (status === 429) return Code.ResourceExhausted;
  if (status === 503) return Code.Unavailable;
  if (status === 504) return Code.DeadlineExceeded;
  return Code.Internal;
}

const pointId = (id: PointId | undefined): string | number => (id?.pointIdOptions.case === "num" ? Number(id.pointIdOptions.value) : String(id?.pointIdOptions.value));

function jsonOf(value: Value): unknown {
  const { kind } = value;
  switch (kind.case) {
    case "integerValue":
      return Number(kind.value);
    case "listValue":
      return kind.value.values.map(jsonOf);
    case "structValue":
      return Object.fromEntries(Object.entries(kind.value.fields).map(([key, field]) => [key, jsonOf(field)]));
    case "nullValue":
    case undefined:
      return null;
    default:
      return kind.value;
  }
}

function restFilter(filter: Filter | undefined): Record<string, unknown> | null {
  if (!filter) return null;
  return { must: filter.must.map(restCondition), should: filter.should.map(restCondition), must_not: filter.mustNot.map(restCondition) };
}

function restCondition(condition: Condition): unknown {
  const { conditionOneOf: c } = condition;
  if (c.case === "filter") return restFilter(c.value);
  if (c.case === "hasId") return { has_id: c.value.hasId.map(pointId) };
  if (c.case === "isEmpty") return { is_empty: { key: c.value.key } };
  if (c.case === "field" && c.value.range) {
    const { lt, lte, gt, gte } = c.value.range;
    return { key: c.value.key, range: { lt, lte, gt, gte } };
  }
  if (c.case === "field" && c.value.match) {
    const { matchValue } = c.value.match;
    if (matchValue.case === "keyword" || matchValue.case === "boolean") return { key: c.value.key, match: { value: matchValue.value } };
    if (matchValue.case === "integer") return { key: c.value.key, match: { value: Number(matchValue.value) } };
  }
  throw new HttpError(400, `Wrong input: condition ${c.case ?? "(none)"} is not served by this test server`);
}

const ORDERING_NAMES: Record<number, string> = { [WriteOrderingType.Weak]: "weak", [WriteOrderingType.Medium]: "medium", [WriteOrderingType.Strong]: "strong" };

function writeQuery(request: { wait?: boolean | undefined; ordering?: { type: WriteOrderingType } | undefined }): string {
  const query = new URLSearchParams();
  if (request.wait !== undefined) query.set("wait", String(request.wait));
  if (request.ordering) query.set("ordering", ORDERING_NAMES[request.ordering.type] ?? String(request.ordering.type));
  return query.size > 0 ? `?${query}` : "";
}

const WINDOW_BYTES = 16 << 20;

/** A Qdrant test server and its gRPC front, both stopped at the end of the test. */
export async function startQdrantWithGrpc(t: { teardown(fn: () => Promise<void>): void }): Promise<{ fake: FakeQdrant; grpc: FakeQdrantGrpc }> {
  const fake = new FakeQdrant();
  await fake.start();
  const grpc = new FakeQdrantGrpc(fake);
  await grpc.start();
  t.teardown(async () => {
    await grpc.stop();
    await fake.stop();
  });
  return { fake, grpc };
}

export class FakeQdrantGrpc {
  private server: Http2Server | null = null;
  private readonly sessions = new Set<Http2Session>();
  private port = 0;
  private readonly fake: FakeQdrant;
  /** RPCs served, by name ("Upsert", "Delete"); the FakeQdrant counts them under their REST routes too. */
  readonly calls = new Map<string, number>();
  /** Every api-key header it was sent. */
  readonly apiKeys = new Set<string>();

  /** Whether it serves Qdrant.HealthCheck (the version check); without it, it answers Unimplemented as a server that is not Qdrant's gRPC API does. */
  private readonly healthCheck: boolean;

  constructor(fake: FakeQdrant, options: { healthCheck?: boolean } = {}) {
    this.fake = fake;
    this.healthCheck = options.healthCheck ?? true;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(port = this.port): Promise<string> {
    if (this.server) return this.url;
    const routes = (router: ConnectRouter) => {
      if (this.healthCheck) router.service(Qdrant, { healthCheck: () => ({ title: "qdrant - vector search engine", version: this.fake.version }) });
      router.service(Points, {
        upsert: async (request: UpsertPoints, context) => {
          const body = {
            points: request.points.map((point) => {
              const vectors = point.vectors?.vectorsOptions;
              const vector = vectors?.case === "vector" ? (vectors.value.vector.case === "dense" ? vectors.value.vector.value.data : vectors.value.data) : undefined;
              return { id: pointId(point.id), vector, payload: Object.fromEntries(Object.entries(point.payload).map(([key, value]) => [key, jsonOf(value)])) };
            }),
            update_filter: restFilter(request.updateFilter),
          };
          return this.serve(context, "Upsert", "PUT", `/collections/${encodeURIComponent(request.collectionName)}/points${writeQuery(request)}`, body);
        },
        delete: async (request: DeletePoints, context) => {
          const selector = request.points?.pointsSelectorOneOf;
          const body = selector?.case === "filter" ? { filter: restFilter(selector.value) } : selector?.case === "points" ? { points: selector.value.ids.map(pointId) } : {};
          return this.serve(context, "Delete", "POST", `/collections/${encodeURIComponent(request.collectionName)}/points/delete${writeQuery(request)}`, body);
        },
      });
    };
    // HTTP/2's default flow-control windows (64 KiB) would have a 400 KiB batch wait on window
    // updates, round trip after round trip; Qdrant's server (tonic) opens them wider.
    const server = createServer({ settings: { initialWindowSize: WINDOW_BYTES } }, connectNodeAdapter({ routes, grpcWeb: false, connect: false }));
    server.on("session", (session) => {
      session.setLocalWindowSize(WINDOW_BYTES);
      this.sessions.add(session);
      session.on("close", () => this.sessions.delete(session));
    });
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this.url;
  }

  /** Stops listening and drops every connection (clients see Unavailable) until `start()`. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const session of this.sessions) session.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Serves one write through the FakeQdrant, after the next fault of its schedule: a status
   * becomes its gRPC code (with retry-after), a delay or a hold waits, a reset is Aborted (what
   * connect's client reports for a reset connection; a handler cannot cut its own).
   */
  private async serve(context: HandlerContext, rpc: string, method: string, path: string, body: Record<string, unknown>) {
    this.calls.set(rpc, (this.calls.get(rpc) ?? 0) + 1);
    const authorization = context.requestHeader.get("authorization");
    if (authorization) this.fake.authorizations.add(authorization);
    const apiKey = context.requestHeader.get("api-key");
    if (apiKey) this.apiKeys.add(apiKey);
    const fault = this.fake.faults.take();
    if (fault) {
      this.fake.faults.injected++;
      if (fault.kind === "hold") {
        fault.onArrival?.();
        await fault.until;
      } else if (fault.kind === "delay") {
        await new Promise((resolve) => setTimeout(resolve, fault.ms));
      } else if (fault.kind === "reset") {
        throw new ConnectError("read ECONNRESET (test fault)", Code.Aborted);
      } else {
        if (fault.delayMs !== undefined) await new Promise((resolve) => setTimeout(resolve, fault.delayMs));
        const metadata = fault.retryAfterSeconds === undefined ? undefined : new Headers({ "retry-after": String(fault.retryAfterSeconds) });
        throw new ConnectError(fault.message ?? `injected fault ${fault.status}`, fault.grpcCode ?? codeOf(fault.status), metadata);
      }
    }
    try {
      const result = this.fake.serve(method, new URL(path, "http://localhost"), body) as { operation_id: number };
      return { result: { operationId: BigInt(result.operation_id), status: 2 /* Completed */ }, time: 0 };
    } catch (error) {
      if (error instanceof HttpError) throw new ConnectError(error.message, codeOf(error.status));
      throw error;
    }
  }
}
