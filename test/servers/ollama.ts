// An Ollama-compatible HTTP server for tests: /api/embed, /api/version, /api/tags with the real
// response and error shapes, deterministic embeddings in which shared words score higher, and
// the same fault injection as the Qdrant test server. Use it through the official `ollama` client.
import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { readJson } from "./faults.ts";
import { TestServer } from "./testServer.ts";

/** Feature-hashed bag of words, L2-normalised: texts sharing words have a higher cosine. */
export function embedText(text: string, dimensions: number): number[] {
  const vector = new Array<number>(dimensions).fill(0);
  for (const word of text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []) {
    const digest = createHash("sha256").update(word).digest();
    const slot = digest.readUInt32BE(0) % dimensions;
    vector[slot]! += digest[4]! & 1 ? 1 : -1;
  }
  const norm = Math.hypot(...vector);
  return norm === 0 ? vector.map((_, i) => (i === 0 ? 1 : 0)) : vector.map((value) => value / norm);
}

/** Waits `ms`, or less if the request's connection closes first. */
function untilDelayOrClose(request: IncomingMessage, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      request.socket.off("close", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    request.socket.once("close", done);
  });
}

export class FakeOllama extends TestServer {
  /** Models this server has "pulled", with their embedding size. */
  readonly models = new Map<string, number>();
  embedCalls = 0;
  embeddedInputs = 0;
  /** When each /api/embed request arrived (Date.now()), faulted ones included: what a rate limit is measured by. */
  readonly embedRequestTimes: number[] = [];
  /** /api/embed requests being handled now (until their connection closes), and the most at once (counted server-side). */
  embedsInFlight = 0;
  maxEmbedsInFlight = 0;
  /** When each /api/embed request arrived and when its connection closed (Infinity while it is open). */
  private readonly embedSpans: Array<{ arrivedAt: number; closedAt: number }> = [];
  /** How long each embed request takes, ms, so that concurrent requests overlap. Default 0. */
  embedDelayMs = 0;
  constructor(models: Record<string, number> = { "nomic-embed-text": 768 }) {
    super();
    for (const [name, size] of Object.entries(models)) this.models.set(name, size);
  }

  /**
   * The most /api/embed requests at once among those that arrived at or after `since` (ms):
   * requests already in flight then, and their overlap with later ones, are not counted.
   */
  mostInFlightSince(since: number): number {
    const events = this.embedSpans
      .filter((span) => span.arrivedAt >= since)
      .flatMap((span) => [
        { at: span.arrivedAt, delta: 1 },
        { at: span.closedAt, delta: -1 },
      ])
      // A request that closes at the millisecond another arrives does not overlap it.
      .sort((a, b) => a.at - b.at || a.delta - b.delta);
    let now = 0;
    let most = 0;
    for (const { delta } of events) most = Math.max(most, (now += delta));
    return most;
  }

  private model(name: unknown): number {
    const base = typeof name === "string" ? name.replace(/:latest$/, "") : "";
    const size = this.models.get(base);
    if (size === undefined) throw Object.assign(new Error(`model "${String(name)}" not found, try pulling it first`), { status: 404 });
    return size;
  }

  protected async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown) => {
      response.writeHead(status, { "content-type": "application/json; charset=utf-8" });
      response.end(JSON.stringify(body));
    };
    const isEmbed = request.method === "POST" && request.url?.startsWith("/api/embed") === true;
    if (isEmbed) {
      const span = { arrivedAt: Date.now(), closedAt: Infinity };
      this.embedRequestTimes.push(span.arrivedAt);
      this.embedSpans.push(span);
      this.maxEmbedsInFlight = Math.max(this.maxEmbedsInFlight, ++this.embedsInFlight);
      response.once("close", () => {
        this.embedsInFlight--;
        span.closedAt = Date.now();
      });
    }
    try {
      const fault = this.faults.take();
      if (fault && (await this.faults.apply(fault, request, response, (_status, message) => ({ error: message })))) return;
      const path = new URL(request.url ?? "/", "http://localhost").pathname;
      if (request.method === "GET" && path === "/api/version") return send(200, { version: "0.5.7" });
      if (request.method === "GET" && path === "/api/tags") {
        return send(200, { models: [...this.models.keys()].map((name) => ({ name: `${name}:latest`, model: `${name}:latest`, size: 274302450, digest: "0".repeat(64), details: { family: "nomic-bert" } })) });
      }
      if (request.method === "POST" && path === "/api/embed") {
        const body = (await readJson(request)) as { model?: unknown; input?: unknown };
        const size = this.model(body.model);
        const inputs = typeof body.input === "string" ? [body.input] : body.input;
        if (!Array.isArray(inputs) || !inputs.every((input) => typeof input === "string")) {
          return send(400, { error: "invalid input type" });
        }
        this.embedCalls++;
        this.embeddedInputs += inputs.length;
        // A request whose client went away (a killed worker) stops waiting, and counting, at once.
        if (this.embedDelayMs > 0) await untilDelayOrClose(request, this.embedDelayMs);
        if (request.socket.destroyed) return;
        return send(200, {
          model: body.model,
          embeddings: inputs.map((input) => embedText(input, size)),
          total_duration: 1_000_000,
          load_duration: 100_000,
          prompt_eval_count: inputs.length,
        });
      }
      send(404, { error: "404 page not found" });
    } catch (error) {
      if (response.headersSent) return;
      const status = (error as { status?: number }).status ?? (error instanceof SyntaxError ? 400 : 500);
      send(status, { error: (error as Error).message });
    }
  }
}
