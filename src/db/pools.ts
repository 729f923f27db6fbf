import pg from "pg";
import { createPool, SchemaValidationError, type DatabasePool, type Interceptor } from "slonik";
import { CONNECT_TIMEOUT_MS, KEEP_ALIVE, type PoolMode } from "./connections.ts";
import { retryLostOutcomes } from "./outcomeRetry.ts";
import { createPgDriver } from "./slonikDriver.ts";

/*
 * The connection budget of one worker process (README, Production: Connection budget): the queue
 * pool and the application pool below, min(concurrency, 10) + 2 each; the liveness pool, 2; the
 * metrics probes (ops/probePool.ts), 2; the relay's LISTEN session, 1. So at most
 * 2 x min(concurrency, 10) + 9 on a direct connection. Behind a transaction-mode pooler these are
 * client connections: server connections are held per transaction, bounded by the pooler, and
 * no code path holds one while it waits for another (the migration lock is tried, see
 * db/migrate.ts), so a worker makes progress with two; the LISTEN sessions (the relay's and, in
 * transaction mode, the job listener's) go to DATABASE_DIRECT_URL or are not opened.
 */

/** Connections beyond the job slots: graphile-worker's LISTEN client and its completion/fail batches. */
const GRAPHILE_EXTRA_CONNECTIONS = 2;
/** Connections beyond the job slots for application SQL: dead-letter writes, the relay's and cron's reads. */
const APP_EXTRA_CONNECTIONS = 2;
/**
 * Most connections either pool opens for job slots, however many slots there are. A job slot
 * holds a connection only for one short query at a time (a read in prepare; a fetch when the
 * local queue is off) and commits go through a few shared batch transactions (at most 8), so
 * hundreds of slots, which mostly wait, need no more than this (graphile-worker's own default
 * pool is 10). At the default 100 slots a worker opens 12 + 12 + 2 connections, as many as 10
 * slots did.
 */
const MAX_SLOT_CONNECTIONS = 10;

/** Connections for `concurrency` job slots plus `extra` of the pool's own. */
function poolSize(concurrency: number, extra: number): number {
  return Math.min(concurrency, MAX_SLOT_CONNECTIONS) + extra;
}

/** The pg pool graphile-worker runs on: a client per concurrent job (up to the cap) plus its own. */
export function createQueuePool(url: string, concurrency: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: poolSize(concurrency, GRAPHILE_EXTRA_CONNECTIONS),
    application_name: "pgconverge-queue",
    // graphile-worker holds one of these for its LISTEN for the life of the worker.
    ...KEEP_ALIVE,
  });
  // A client that loses its server emits "error"; unhandled, that would crash the process.
  // The query in flight fails on its own and graphile-worker retries, so these are dropped.
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  retryLostOutcomes(pool);
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
  /** statement_timeout for every statement, ms (on a session only; see poolMode). */
  statementTimeoutMs: number;
  /**
   * "transaction" when the URL is a transaction-mode pooler: the pool then sends no
   * statement_timeout or idle_in_transaction_session_timeout at connect (a pooler refuses
   * startup parameters, and would not keep them on the session anyway). The timeout that
   * matters, the apply's, is set inside each apply transaction (set_config(..., true), see
   * claimBatch); the others are the server's or the pooler's (README, Production). Default "session".
   */
  poolMode?: PoolMode;
  /** Slonik interceptors run after pgconverge's own (tests use one to see the statements sent). Default none. */
  interceptors?: readonly Interceptor[];
}

/**
 * The slonik pool for application SQL (apply transactions, dead letters, prepare's reads). On a
 * session, a session left idle inside a transaction is killed by the server after the same timeout.
 */
export function createAppPool(url: string, concurrency: number, options: AppPoolOptions): Promise<DatabasePool> {
  return createSlonikPool(url, "pgconverge-app", poolSize(concurrency, APP_EXTRA_CONNECTIONS), options);
}

/**
 * The heartbeat's and the sweeper's own two connections. On the application pool they would
 * queue behind job work, and a heartbeat that waits longer than WORKER_DEAD_AFTER_MS (a batch
 * stuck on a lock, a burst of re-runs) gets this worker declared dead and its running jobs
 * taken over.
 */
export function createLivenessPool(url: string, options: AppPoolOptions): Promise<DatabasePool> {
  return createSlonikPool(url, "pgconverge-liveness", 2, options);
}

function createSlonikPool(url: string, applicationName: string, size: number, options: AppPoolOptions): Promise<DatabasePool> {
  const withName = new URL(url);
  withName.searchParams.set("application_name", applicationName);
  const onSession = (options.poolMode ?? "session") === "session";
  return createPool(withName.toString(), {
    maximumPoolSize: size,
    connectionTimeout: CONNECT_TIMEOUT_MS,
    statementTimeout: onSession ? options.statementTimeoutMs : "DISABLE_TIMEOUT",
    idleInTransactionSessionTimeout: onSession ? options.statementTimeoutMs : "DISABLE_TIMEOUT",
    captureStackTrace: false,
    interceptors: [resultParser, ...(options.interceptors ?? [])],
    // slonik's pg driver, but its set-up connection survives being cut (slonikDriver.ts).
    driverFactory: createPgDriver(),
  });
}
