// A Qdrant-compatible HTTP server for tests: the REST endpoints pgconverge calls, with
// Qdrant's JSON envelope, status codes and id rules, plus fault injection. Talk to it with
// the official @qdrant/js-client-rest, exactly as the project talks to a real Qdrant.
import type { IncomingMessage, ServerResponse } from "node:http";
import { readJson } from "./faults.ts";
import { TestServer } from "./testServer.ts";

export interface StoredPoint {
  id: string | number;
  vector: number[];
  payload: Record<string, unknown>;
  /** Date.now() when the point was last written, for lag measurements. */
  writtenAt: number;
}

interface Collection {
  size: number;
  distance: string;
  points: Map<string, StoredPoint>;
  /** Payload indexes: field name -> schema (e.g. "keyword"). */
  indexes: Map<string, string>;
}

export class HttpError extends Error {
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** Qdrant accepts an unsigned integer or a UUID (any case, with or without hyphens). */
function pointKey(id: unknown): { key: string; id: string | number } {
  if (typeof id === "number" && Number.isSafeInteger(id) && id >= 0) return { key: `n:${id}`, id };
  if (typeof id === "string" && UUID.test(id)) {
    const hex = id.replace(/-/g, "").toLowerCase();
    const canonical = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    return { key: `u:${canonical}`, id: canonical };
  }
  throw new HttpError(400, `Format error in JSON body: value ${JSON.stringify(id)} is not a valid point ID, valid values are either an unsigned integer or a UUID`);
}

function selectPayload(payload: Record<string, unknown>, withPayload: unknown): Record<string, unknown> | undefined {
  if (withPayload === false || withPayload === undefined || withPayload === null) return undefined;
  if (withPayload === true) return payload;
  const include = Array.isArray(withPayload) ? withPayload : (withPayload as { include?: string[] }).include;
  if (!include) return payload;
  return Object.fromEntries(include.filter((key) => key in payload).map((key) => [key, payload[key]]));
}

const INDEX_SCHEMAS = ["keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid"];

/**
 * Qdrant's filter (must / should / must_not), for the conditions used here: a field match
 * (`{ key, match: { value } }`, any element of an array payload value matches), a numeric
 * `range` (lt, lte, gt, gte; a value that is not a number never matches), `is_empty` (key
 * absent, null or []), `has_id`, and nested filters. Others are refused with a 400.
 */
function matches(point: StoredPoint, filter: unknown): boolean {
  if (filter === undefined || filter === null) return true;
  if (typeof filter !== "object") throw new HttpError(400, "Format error in JSON body: filter must be an object");
  const { must, should, must_not: mustNot } = filter as { must?: unknown; should?: unknown; must_not?: unknown };
  const list = (conditions: unknown) => (conditions === undefined || conditions === null ? [] : Array.isArray(conditions) ? conditions : [conditions]);
  if (!list(must).every((condition) => holds(point, condition))) return false;
  if (list(mustNot).some((condition) => holds(point, condition))) return false;
  const any = list(should);
  return any.length === 0 || any.some((condition) => holds(point, condition));
}

function holds(point: StoredPoint, condition: unknown): boolean {
  const c = (condition ?? {}) as Record<string, unknown>;
  if ("must" in c || "should" in c || "must_not" in c) return matches(point, c);
  if ("has_id" in c && Array.isArray(c.has_id)) return c.has_id.some((id) => pointKey(id).key === pointKey(point.id).key);
  if ("is_empty" in c) {
    const value = point.payload[String((c.is_empty as { key?: unknown } | null)?.key)];
    return value === undefined || value === null || (Array.isArray(value) && value.length === 0);
  }
  if (typeof c.key === "string" && c.range && typeof c.range === "object") {
    const range = c.range as { lt?: unknown; lte?: unknown; gt?: unknown; gte?: unknown };
    const bounds = [range.lt, range.lte, range.gt, range.gte].filter((bound) => bound !== undefined && bound !== null);
    if (bounds.length === 0 || !bounds.every((bound) => typeof bound === "number")) throw new HttpError(400, "Format error in JSON body: range bounds must be numbers");
    const value = point.payload[c.key];
    const inRange = (x: unknown) =>
      typeof x === "number" &&
      (typeof range.lt !== "number" || x < range.lt) &&
      (typeof range.lte !== "number" || x <= range.lte) &&
      (typeof range.gt !== "number" || x > range.gt) &&
      (typeof range.gte !== "number" || x >= range.gte);
    return Array.isArray(value) ? value.some(inRange) : inRange(value);
  }
  if (typeof c.key === "string" && c.match && typeof c.match === "object" && "value" in c.match) {
    const expected = (c.match as { value: unknown }).value;
    const value = point.payload[c.key];
    return Array.isArray(value) ? value.includes(expected) : value === expected;
  }
  throw new HttpError(400, "Format error in JSON body: data did not match any variant of untagged enum Condition");
}

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

const ORDERINGS = ["weak", "medium", "strong"];

/** Qdrant's query parameters `ordering` (writes) and `consistency` (reads), checked as Qdrant does. */
function checkQuery(url: URL): void {
  const ordering = url.searchParams.get("ordering");
  if (ordering !== null && !ORDERINGS.includes(ordering)) {
    throw new HttpError(400, `Query deserialize error: unknown variant \`${ordering}\`, expected one of \`weak\`, \`medium\`, \`strong\``);
  }
  const consistency = url.searchParams.get("consistency");
  if (consistency !== null && !/^(majority|quorum|all|[1-9][0-9]*)$/.test(consistency)) {
    throw new HttpError(400, `Query deserialize error: data did not match any variant of untagged enum ReadConsistency`);
  }
}

export class FakeQdrant extends TestServer {
  readonly collections = new Map<string, Collection>();
  /** Requests served per "METHOD /path-pattern". */
  readonly requests = new Map<string, number>();
  /** The query string of the last request per "METHOD /path-pattern" (wait, ordering, consistency). */
  readonly queries = new Map<string, URLSearchParams>();
  /** The version GET / reports (the relay refuses one older than it needs). */
  version = "1.16.0";
  private readonly started = Date.now();

  /** Stops listening (clients get ECONNREFUSED) until `up()`; the data is kept. */
  async down(): Promise<void> {
    await this.stop();
  }

  async up(): Promise<void> {
    await this.start();
  }

  collection(name: string): Collection {
    const collection = this.collections.get(name);
    if (!collection) throw new HttpError(404, `Not found: Collection \`${name}\` doesn't exist!`);
    return collection;
  }

  /** Points of a collection, for assertions. */
  points(name: string): StoredPoint[] {
    return [...(this.collections.get(name)?.points.values() ?? [])];
  }

  protected async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const send = (status: number, body: Record<string, unknown>) => {
      const time = Number(process.hrtime.bigint() - started) / 1e9;
      response.writeHead(status, { "content-type": "application/json" });
      response.end(JSON.stringify({ ...body, time }));
    };
    try {
      const fault = this.faults.take();
      const url = new URL(request.url ?? "/", "http://localhost");
      // The body first: a held request is served after its client may have gone.
      const body = request.method === "GET" || request.method === "DELETE" ? {} : await readJson(request);
      if (fault && (await this.faults.apply(fault, request, response, (_status, message) => ({ status: { error: message }, time: 0 })))) return;
      const result = this.serve(request.method ?? "GET", url, body as Record<string, unknown>);
      if (request.socket.destroyed) return;
      // GET / answers bare, without the envelope, as Qdrant does.
      if (url.pathname === "/") {
        response.writeHead(200, { "content-type": "application/json" });
        response.end(JSON.stringify(result));
        return;
      }
      send(200, { result, status: "ok" });
    } catch (error) {
      if (response.headersSent || request.socket.destroyed) return;
      if (error instanceof HttpError) send(error.status, { status: { error: error.message } });
      else if (error instanceof SyntaxError) send(400, { status: { error: `Format error in JSON body: ${error.message}` } });
      else send(500, { status: { error: `Service internal error: ${String(error)}` } });
    }
  }

  /**
   * One request as the REST API has it: counted, its query checked and kept, then routed. The
   * gRPC front (qdrantGrpc.ts) serves its writes through here too.
   */
  serve(method: string, url: URL, body: Record<string, unknown>): unknown {
    checkQuery(url);
    return this.route(method, url, body);
  }

  private count(route: string): void {
    this.requests.set(route, (this.requests.get(route) ?? 0) + 1);
  }

  private route(method: string, url: URL, body: Record<string, unknown>): unknown {
    const parts = url.pathname.split("/").filter(Boolean);
    if (method === "GET" && parts.length === 0) {
      this.count("GET /");
      return { title: "qdrant - vector search engine", version: this.version };
    }
    if (parts[0] !== "collections" || !parts[1]) throw new HttpError(404, `Not found: ${url.pathname}`);
    const name = decodeURIComponent(parts[1]);
    const rest = parts.slice(2).join("/");
    const route = `${method} /collections/{name}${rest ? `/${rest}` : ""}`;
    this.count(route);
    this.queries.set(route, url.searchParams);
    switch (route) {
      case "GET /collections/{name}":
        return this.describe(name);
      case "GET /collections/{name}/exists":
        return { exists: this.collections.has(name) };
      case "PUT /collections/{name}":
        return this.create(name, body);
      case "DELETE /collections/{name}":
        return this.collections.delete(name);
      case "PUT /collections/{name}/points":
        return this.upsert(name, body);
      case "POST /collections/{name}/points/delete":
        return this.deletePoints(name, body);
      case "POST /collections/{name}/points":
        return this.retrieve(name, body);
      case "POST /collections/{name}/points/scroll":
        return this.scroll(name, body);
      case "POST /collections/{name}/points/count":
        return { count: [...this.collection(name).points.values()].filter((point) => matches(point, body.filter)).length };
      case "PUT /collections/{name}/index":
        return this.createIndex(name, body);
      case "POST /collections/{name}/points/search":
        return this.search(name, body.vector, body);
      case "POST /collections/{name}/points/query":
        return { points: this.search(name, body.query, body) };
      default:
        throw new HttpError(404, `Not found: ${method} ${url.pathname}`);
    }
  }

  private describe(name: string): unknown {
    const collection = this.collection(name);
    return {
      status: "green",
      optimizer_status: "ok",
      points_count: collection.points.size,
      indexed_vectors_count: collection.points.size,
      segments_count: 1,
      config: { params: { vectors: { size: collection.size, distance: collection.distance } } },
      payload_schema: Object.fromEntries(
        [...collection.indexes].map(([field, schema]) => [field, { data_type: schema, points: this.points(name).filter((point) => point.payload[field] !== undefined).length }]),
      ),
    };
  }

  /** Creating an index that exists is accepted, as Qdrant does. */
  private createIndex(name: string, body: Record<string, unknown>): unknown {
    const collection = this.collection(name);
    if (typeof body.field_name !== "string" || body.field_name === "") throw new HttpError(400, "Format error in JSON body: missing field `field_name`");
    const schema = typeof body.field_schema === "string" ? body.field_schema : (body.field_schema as { type?: unknown } | undefined)?.type;
    if (typeof schema !== "string" || !INDEX_SCHEMAS.includes(schema)) {
      throw new HttpError(400, `Format error in JSON body: unknown variant \`${String(schema)}\``);
    }
    collection.indexes.set(body.field_name, schema);
    return { operation_id: Date.now() - this.started, status: "completed" };
  }

  private create(name: string, body: Record<string, unknown>): boolean {
    if (this.collections.has(name)) throw new HttpError(409, `Wrong input: Collection \`${name}\` already exists!`);
    const vectors = body.vectors as { size?: unknown; distance?: unknown } | undefined;
    if (!vectors || typeof vectors.size !== "number" || !Number.isInteger(vectors.size) || vectors.size < 1) {
      throw new HttpError(400, "Format error in JSON body: missing field `vectors.size`");
    }
    if (!["Cosine", "Dot", "Euclid", "Manhattan"].includes(String(vectors.distance))) {
      throw new HttpError(400, `Format error in JSON body: unknown variant \`${String(vectors.distance)}\``);
    }
    this.collections.set(name, { size: vectors.size, distance: String(vectors.distance), points: new Map(), indexes: new Map() });
    return true;
  }

  private upsert(name: string, body: Record<string, unknown>): unknown {
    const collection = this.collection(name);
    const points = body.points;
    if (!Array.isArray(points)) throw new HttpError(400, "Format error in JSON body: missing field `points`");
    // Validate the whole batch first: Qdrant applies a batch all or nothing.
    const valid = points.map((point: { id?: unknown; vector?: unknown; payload?: unknown }) => {
      const { key, id } = pointKey(point.id);
      const vector = point.vector;
      if (!Array.isArray(vector) || !vector.every((value) => typeof value === "number")) {
        throw new HttpError(400, "Format error in JSON body: vector must be an array of numbers");
      }
      if (vector.length !== collection.size) {
        throw new HttpError(400, `Wrong input: Vector dimension error: expected dim: ${collection.size}, got ${vector.length}`);
      }
      return { key, id, vector, payload: (point.payload ?? {}) as Record<string, unknown> };
    });
    // update_filter (Qdrant 1.16): an existing point is replaced only if it matches the filter;
    // a point that does not exist is inserted whatever the filter says.
    const updateFilter = body.update_filter ?? null;
    const now = Date.now();
    for (const point of valid) {
      const existing = collection.points.get(point.key);
      if (existing && updateFilter !== null && !matches(existing, updateFilter)) continue;
      collection.points.set(point.key, { id: point.id, vector: point.vector, payload: point.payload, writtenAt: now });
    }
    return { operation_id: now - this.started, status: "completed" };
  }

  /** By ids (`points`) or by `filter`: the points matching it. */
  private deletePoints(name: string, body: Record<string, unknown>): unknown {
    const collection = this.collection(name);
    if (Array.isArray(body.points)) {
      for (const id of body.points) collection.points.delete(pointKey(id).key);
    } else if (body.filter && typeof body.filter === "object") {
      const doomed = [...collection.points].filter(([, point]) => matches(point, body.filter)).map(([key]) => key);
      for (const key of doomed) collection.points.delete(key);
    } else {
      throw new HttpError(400, "Format error in JSON body: expected `points` or `filter`");
    }
    return { operation_id: Date.now() - this.started, status: "completed" };
  }

  private present(point: StoredPoint, withPayload: unknown, withVector: unknown): Record<string, unknown> {
    const shown: Record<string, unknown> = { id: point.id };
    const payload = selectPayload(point.payload, withPayload);
    shown.payload = payload ?? null;
    shown.vector = withVector === true ? point.vector : null;
    return shown;
  }

  private retrieve(name: string, body: Record<string, unknown>): unknown {
    const collection = this.collection(name);
    if (!Array.isArray(body.ids)) throw new HttpError(400, "Format error in JSON body: missing field `ids`");
    return body.ids
      .map((id) => collection.points.get(pointKey(id).key))
      .filter((point): point is StoredPoint => point !== undefined)
      .map((point) => this.present(point, body.with_payload ?? true, body.with_vector ?? false));
  }

  private scroll(name: string, body: Record<string, unknown>): unknown {
    const collection = this.collection(name);
    const limit = typeof body.limit === "number" ? body.limit : 10;
    const sorted = [...collection.points.entries()].filter(([, point]) => matches(point, body.filter)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const start = body.offset === undefined || body.offset === null ? 0 : sorted.findIndex(([key]) => key >= pointKey(body.offset).key);
    const page = start < 0 ? [] : sorted.slice(start, start + limit);
    const next = start < 0 ? undefined : sorted[start + limit];
    return {
      points: page.map(([, point]) => this.present(point, body.with_payload ?? true, body.with_vector ?? false)),
      next_page_offset: next ? next[1].id : null,
    };
  }

  private search(name: string, query: unknown, body: Record<string, unknown>): unknown[] {
    const collection = this.collection(name);
    if (!Array.isArray(query)) throw new HttpError(400, "Format error in JSON body: missing query vector");
    if (query.length !== collection.size) {
      throw new HttpError(400, `Wrong input: Vector dimension error: expected dim: ${collection.size}, got ${query.length}`);
    }
    const limit = typeof body.limit === "number" ? body.limit : 10;
    return [...collection.points.values()]
      .map((point) => ({ point, score: cosine(query as number[], point.vector) }))
      .sort((a, b) => b.score - a.score)
      .slice(0, limit)
      .map(({ point, score }) => ({ ...this.present(point, body.with_payload ?? false, body.with_vector ?? false), version: 0, score }));
  }
}
