import pg from "pg";
import type { PoolMode } from "../db/connections.ts";

export interface ProbePoolOptions {
  /** Deadline of connecting and of each statement, ms. */
  timeoutMs: number;
  /** "transaction" behind a transaction-mode pooler: no server-side statement_timeout (a startup parameter), only the client-side one. */
  poolMode?: PoolMode;
}

/**
 * The connections behind /metrics and /readyz: a pool of its own, so a slow scrape or a
 * flood of probes can never take a connection a job needs, with two connections at most
 * and a short deadline on connecting (also while waiting for a free connection) and on every
 * statement (server-side statement_timeout, plus a client-side one in case the server never
 * answers at all).
 */
export function createProbePool(url: string, options: ProbePoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: 2,
    application_name: "pgconverge-ops",
    connectionTimeoutMillis: options.timeoutMs,
    ...((options.poolMode ?? "session") === "session" ? { statement_timeout: options.timeoutMs } : {}),
    query_timeout: options.timeoutMs + 1_000,
    idleTimeoutMillis: 30_000,
  });
  // A connection that loses its server (the database was dropped or restarted) emits
  // "error"; unhandled, that would crash the process. The next probe reports it instead.
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}
