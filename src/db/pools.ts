import pg from "pg";
import { createPool, SchemaValidationError, type DatabasePool, type Interceptor } from "slonik";

/** Connections beyond the job slots: graphile-worker's LISTEN client and its completion/fail batches. */
const GRAPHILE_EXTRA_CONNECTIONS = 2;
/** Connections beyond the job slots for application SQL: heartbeat, sweeper and dead-letter writes. */
const APP_EXTRA_CONNECTIONS = 2;

/** The pg pool graphile-worker runs on: one client per concurrent job plus its own. */
export function createQueuePool(url: string, concurrency: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: concurrency + GRAPHILE_EXTRA_CONNECTIONS,
    application_name: "pgconverge-queue",
  });
  // A client that loses its server emits "error"; unhandled, that would crash the process.
  // The query in flight fails on its own and graphile-worker retries, so these are dropped.
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}

/**
 * Makes `sql.type(schema)` validate and transform every row (slonik leaves that to an
 * interceptor): a query's declared shape is then what the code receives, or an error.
 */
const resultParser: Interceptor = {
  name: "pgconverge-result-parser",
  transformRow(context, query, row) {
    const parser = context.resultParser;
    if (!parser) return row;
    const parsed = parser.safeParse(row);
    if (!parsed.success) throw new SchemaValidationError(query, row, parsed.error.issues);
    return parsed.data as typeof row;
  },
};

export interface AppPoolOptions {
  /** statement_timeout for every statement, ms. */
  statementTimeoutMs: number;
}

/**
 * The slonik pool for application SQL (apply transactions, liveness, dead letters). A
 * session left idle inside a transaction is killed by the server after the same timeout.
 */
export function createAppPool(url: string, concurrency: number, options: AppPoolOptions): Promise<DatabasePool> {
  const withName = new URL(url);
  withName.searchParams.set("application_name", "pgconverge-app");
  return createPool(withName.toString(), {
    maximumPoolSize: concurrency + APP_EXTRA_CONNECTIONS,
    statementTimeout: options.statementTimeoutMs,
    idleInTransactionSessionTimeout: options.statementTimeoutMs,
    captureStackTrace: false,
    interceptors: [resultParser],
  });
}
