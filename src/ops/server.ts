import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ConfigError } from "../config.ts";
import type { Logger } from "../log.ts";
import { describeError } from "../runtime/errors.ts";
import type { Readiness } from "./readiness.ts";

export interface OpsServerConfig {
  /** Interface to bind (METRICS_HOST); 127.0.0.1 keeps the endpoints off the network. */
  host: string;
  /** Port to bind (METRICS_PORT); 0 picks a free one (tests; the CLI treats 0 as "disabled"). */
  port: number;
  log: Logger;
  metrics: { render(): Promise<string>; readonly contentType: string };
  readiness: () => Promise<Readiness>;
}

/**
 * The operations endpoints of a worker: GET /metrics (Prometheus exposition), /healthz (the
 * process is up: always 200) and /readyz (200 when the database answers and the migrations
 * are current, 503 with a one-line JSON reason otherwise). node:http is enough for three
 * routes. `start()` fails with a ConfigError naming the variable when the address cannot be
 * bound (exit code 2: it is the configuration that must change); `start()` and `stop()` are
 * idempotent.
 */
export class OpsServer {
  private server: Server | null = null;
  private starting: Promise<void> | null = null;

  private readonly config: OpsServerConfig;

  constructor(config: OpsServerConfig) {
    this.config = config;
  }

  /** The bound port (the chosen one when configured with 0). */
  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? this.config.port;
  }

  get url(): string {
    const host = this.config.host.includes(":") ? `[${this.config.host}]` : this.config.host;
    return `http://${host}:${this.port}`;
  }

  start(): Promise<void> {
    this.starting ??= this.listen().catch((error) => {
      this.starting = null;
      throw error;
    });
    return this.starting;
  }

  async stop(): Promise<void> {
    await this.starting?.catch(() => {});
    const server = this.server;
    this.server = null;
    this.starting = null;
    if (!server) return;
    // Prometheus keeps connections alive between scrapes; they must not hold the exit.
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  private async listen(): Promise<void> {
    const { host, port, log } = this.config;
    const server = createServer((request, response) => void this.handle(request, response));
    server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port }, () => {
        server.off("error", reject);
        resolve();
      });
    }).catch((error: NodeJS.ErrnoException) => {
      server.close();
      throw bindError(error, host, port);
    });
    server.on("error", (error) => log.warn({ error: describeError(error) }, "metrics server error"));
    this.server = server;
    log.info({ url: this.url }, "metrics and health endpoints listening");
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const path = (request.url ?? "/").split("?", 1)[0];
    if (request.method !== "GET" && request.method !== "HEAD") return send(response, 405, "text/plain", "method not allowed\n", { allow: "GET, HEAD" });
    try {
      switch (path) {
        case "/metrics":
          return send(response, 200, this.config.metrics.contentType, await this.config.metrics.render());
        case "/healthz":
          return send(response, 200, "application/json", `${JSON.stringify({ status: "ok" })}\n`);
        case "/readyz": {
          const readiness = await this.config.readiness();
          if (readiness.ready) return send(response, 200, "application/json", `${JSON.stringify({ status: "ready" })}\n`);
          return send(response, 503, "application/json", `${JSON.stringify({ status: "unavailable", reason: readiness.reason })}\n`);
        }
        default:
          return send(response, 404, "text/plain", "not found: try /metrics, /healthz or /readyz\n");
      }
    } catch (error) {
      this.config.log.warn({ path, error: describeError(error) }, "metrics request failed");
      send(response, 500, "text/plain", `${describeError(error)}\n`);
    }
  }
}

function send(response: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  if (response.headersSent) return;
  response.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body), "cache-control": "no-store", ...headers });
  response.end(response.req.method === "HEAD" ? undefined : body);
}

function bindError(error: NodeJS.ErrnoException, host: string, port: number): Error {
  const address = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  switch (error.code) {
    case "EADDRINUSE":
      return new ConfigError(`METRICS_PORT: ${address} is already in use; choose another port, or set METRICS_PORT=0 to disable the metrics server`);
    case "EACCES":
      return new ConfigError(`METRICS_PORT: not permitted to listen on ${address}; use a port above 1023`);
    case "EADDRNOTAVAIL":
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return new ConfigError(`METRICS_HOST: cannot listen on ${address} (${error.code}); use an address of this machine, e.g. 127.0.0.1 or 0.0.0.0`);
    default:
      return new ConfigError(`METRICS_PORT: cannot listen on ${address}: ${describeError(error)}`);
  }
}
