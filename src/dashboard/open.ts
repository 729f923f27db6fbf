import type { Hono } from "hono";
import type { DatabasePool } from "slonik";
import type { PoolMode } from "../db/connections.ts";
import { createAppPool } from "../db/pools.ts";
import { createDashboardApp, type DashboardAppOptions } from "./app.ts";

/** Its pages read one view at a time: two connections (plus the pool's own two). */
const DASHBOARD_CONNECTIONS = 2;

export interface OpenDashboardOptions extends Omit<DashboardAppOptions, "pool"> {
  /** The database to show. */
  url: string;
  /** "transaction" behind a transaction-mode pooler (DATABASE_POOL_MODE): no startup parameters then. */
  poolMode: PoolMode;
  /** statement_timeout of its queries, ms (on a session only, as for the worker's pools). */
  statementTimeoutMs: number;
}

export interface OpenDashboard {
  app: Hono<any>;
  pool: DatabasePool;
  /** Stops the reconciles it started, then closes its connections. */
  close(): Promise<void>;
}

/**
 * The dashboard with its own connections: the one place both `pgconverge dashboard` and
 * createDashboard build it, so both honour the pool mode the same way.
 */
export async function openDashboard(options: OpenDashboardOptions): Promise<OpenDashboard> {
  const { url, poolMode, statementTimeoutMs, ...appOptions } = options;
  const pool = await createAppPool(url, DASHBOARD_CONNECTIONS, { statementTimeoutMs, poolMode });
  const { app, close } = createDashboardApp({ ...appOptions, pool });
  return {
    app,
    pool,
    async close() {
      await close();
      await pool.end();
    },
  };
}
