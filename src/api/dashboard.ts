import type { IncomingMessage, ServerResponse } from "node:http";
import type pg from "pg";
import { CoreShape } from "../config.ts";
import { ConfigError } from "../configFields.ts";
import type { DashboardCredentials } from "../dashboard/app.ts";
import { createLogger, type Logger } from "../log.ts";
import type { SyncDefinition } from "../outbox/sync.ts";
import { qdrantClientOf, syncsOf, urlOfPool, type QdrantOptions } from "./syncs.ts";

export type { DashboardCredentials };

export interface DashboardOptions {
  /** The Postgres to show (a postgres:// URL); or give `pool`. Give a read-only login here when `auth` is empty. */
  databaseUrl?: string;
  /** An application's `pg` Pool instead of `databaseUrl` (its connection settings are reused; it is not ended). */
  pool?: pg.Pool;
  /**
   * How `databaseUrl` (or `pool`) keeps sessions (DATABASE_POOL_MODE), as for runWorker:
   * "session" (default), or "transaction" behind a transaction-mode pooler (PgBouncer
   * pool_mode=transaction), where the dashboard sends no startup parameters (no per-session
   * statement timeout then: the pooler's or the server's applies).
   */
  databasePoolMode?: "session" | "transaction";
  /**
   * Who may take actions (retry, discard, reconcile): `user` and `password` (HTTP Basic, for
   * browsers; user defaults to "admin") and/or `token` (Bearer, for scripts). With them, every
   * page needs them. Without a password or a token, createDashboard refuses unless
   * `allowAnonymous` is true.
   */
  auth?: DashboardCredentials;
  /**
   * Serve the pages read-only to anyone who reaches them, without credentials: payloads, errors
   * and document text included. Default false: without `auth`, createDashboard throws.
   */
  allowAnonymous?: boolean;
  /** The path it is mounted under in your server, e.g. "/ops". Default "" (the root). */
  basePath?: string;
  /** Syncs shown on the syncs page and reconcilable from it (with `qdrant`). */
  syncs?: readonly SyncDefinition[];
  /** The Qdrant that reconciles run against (its `readConsistency` too); without it the syncs page only shows the last runs. */
  qdrant?: QdrantOptions;
  /** Heartbeat age after which a worker counts as dead, ms, as for `status` (WORKER_DEAD_AFTER_MS). Default 15 s. */
  deadAfterMs?: number;
  /** How often pages update themselves, seconds. Default 5. */
  refreshSeconds?: number;
  /** A pino logger, for the detail of failures (a page shows only an error id). Default: JSON lines on stdout at level "info". */
  logger?: Logger;
}

export interface Dashboard {
  /** The dashboard as a fetch handler (Request in, Response out), for servers built on web standards. */
  fetch(request: Request): Response | Promise<Response>;
  /** The dashboard as a node:http request listener: `http.createServer(dashboard.listener)`, or call it for the paths under basePath. */
  listener(request: IncomingMessage, response: ServerResponse): void;
  /** Closes its database connections. */
  close(): Promise<void>;
}

const BASE_PATH = /^(?:\/[A-Za-z0-9._~-]+)*$/;

/**
 * The web dashboard's pages (overview, jobs, dead letters, outbox, syncs, audit) as a handler
 * to mount in an application's own HTTP server. It reads the same views as `pgconverge status`.
 *
 * ```ts
 * const dashboard = await createDashboard({ databaseUrl, basePath: "/ops", auth: { password: process.env.OPS_PASSWORD } });
 * http.createServer((req, res) => (req.url?.startsWith("/ops") ? dashboard.listener(req, res) : app(req, res))).listen(3000, "127.0.0.1");
 * ```
 */
export async function createDashboard(options: DashboardOptions): Promise<Dashboard> {
  if (options.databaseUrl === undefined && options.pool === undefined) throw new ConfigError("createDashboard: give databaseUrl or pool");
  const basePath = options.basePath ?? "";
  if (!BASE_PATH.test(basePath)) throw new ConfigError(`createDashboard: basePath must be "" or a path like "/ops" without a trailing slash (got ${JSON.stringify(basePath)})`);
  const poolMode = options.databasePoolMode ?? "session";
  if (poolMode !== "session" && poolMode !== "transaction") throw new ConfigError(`createDashboard: databasePoolMode must be "session" or "transaction" (got ${JSON.stringify(poolMode)})`);
  const credentials = options.auth ?? {};
  if (!credentials.password && !credentials.token && options.allowAnonymous !== true) {
    throw new ConfigError("createDashboard: without auth (a password or a token) anyone who reaches the pages reads payloads and errors; give auth, or allowAnonymous: true to serve them read-only to anyone");
  }
  const syncs = syncsOf(options.syncs ?? []);
  const qdrant = options.qdrant ? await qdrantClientOf(options.qdrant, "createDashboard") : undefined;
  // The HTTP stack loads here, not with the package: most of its users never serve the pages.
  const [{ openDashboard }, { getRequestListener }] = await Promise.all([import("../dashboard/open.ts"), import("@hono/node-server")]);
  const opened = await openDashboard({
    url: options.databaseUrl ?? urlOfPool(options.pool!),
    poolMode,
    statementTimeoutMs: CoreShape.shape.APPLY_TIMEOUT_MS.parse(undefined),
    deadAfterMs: options.deadAfterMs ?? CoreShape.shape.WORKER_DEAD_AFTER_MS.parse(undefined),
    credentials,
    basePath,
    syncs,
    qdrant: qdrant?.client,
    readConsistency: qdrant?.readConsistency,
    log: options.logger ?? createLogger("info"),
    ...(options.refreshSeconds === undefined ? {} : { refreshSeconds: options.refreshSeconds }),
  });
  const fetch = (request: Request) => opened.app.fetch(request);
  return {
    fetch,
    listener: getRequestListener(fetch),
    close: () => opened.close(),
  };
}
