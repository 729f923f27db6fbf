import pRetry from "p-retry";
import { performance } from "node:perf_hooks";
import { isOutcomeStatement, outcomeJobIds, RERUN_GUARD_STATEMENT } from "../runtime/graphileJobs.ts";
import { CONNECT_TIMEOUT_MS } from "./connections.ts";
import pg from "pg";

/*
 * graphile-worker records a job's outcome (completeJobs, failJobs) without awaiting it, and with
 * a local queue in batches whose retry loop gives up after the first failure. A connection lost
 * at that moment (a failover, pg_terminate_backend of every session) therefore either rejects
 * with nobody listening, which ends the process, or fails the batch, which graphile-worker
 * treats as fatal: it shuts its pool down ("queue is in an inconsistent state") and the job
 * stays locked by a live worker. Neither needs to happen: both statements can run again on a
 * fresh connection. A failure's re-run is guarded (graphileJobs.ts says why): it never touches
 * a job locked again after the statement was first sent.
 */

/** Node's codes for a connection that broke under a query. */
const NETWORK_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH"]);

/**
 * Whether `error` says the connection went away, not the statement: SQLSTATE class 08
 * (connection exception) or 57P (operator intervention: terminated, shutting down, cannot
 * connect now), a network code, or pg's own messages for a client whose socket closed.
 */
export function isLostConnection(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === "string") return code.startsWith("08") || code.startsWith("57P") || NETWORK_CODES.has(code);
  return typeof message === "string" && /Connection terminated|not queryable|Connection ended/i.test(message);
}

/** Retries after a lost connection, jittered from 100 ms up to 5 s apart: about half a minute. */
export const LOST_CONNECTION_RETRY = { retries: 10, minTimeout: 100, maxTimeout: 5_000, factor: 2, randomize: true } as const;

const covered = new WeakSet<pg.Pool>();

/**
 * Makes graphile-worker's outcome statements on `pool` survive a lost connection: one that
 * fails because its connection went away runs again on a connection of its own, with backoff,
 * and graphile-worker sees it succeed. Any other error, or a database still gone after
 * the retries, reaches graphile-worker as before. Clients the pool opens from now on are
 * covered; idempotent per pool.
 */
export function retryLostOutcomes(pool: pg.Pool): void {
  if (covered.has(pool)) return;
  covered.add(pool);
  pool.on("connect", (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as { query: unknown }).query = (...args: unknown[]) => {
      // Monotonic: the guard measures the time since this send, and the wall clock may step.
      const sentAt = performance.now();
      const result = query(...args);
      const [config] = args;
      if (args.length !== 1 || !(result instanceof Promise) || !isOutcomeQuery(config)) return result;
      return result.catch((error: unknown) => {
        if (!isLostConnection(error)) throw error;
        return pRetry(() => runAlone(pool, config, sentAt), { ...LOST_CONNECTION_RETRY, shouldRetry: ({ error }) => isLostConnection(error) });
      });
    };
  });
}

/**
 * Runs the statement on a connection of its own, with the pool's settings, closed after. Not on
 * the pool: its clients may all be held by statements waiting here for a retry, and the broken
 * client stays checked out until the retry is done. A statement that would clear jobs' locks
 * runs in a transaction behind its guard, and when the guard finds a job locked since `sentAt`
 * (the first send) nothing runs: graphile-worker gets a result with no rows, as if the
 * statement had matched no job (which, the first run having committed, is what it would do
 * for the run it was sent for).
 */
async function runAlone(pool: pg.Pool, config: { text: string; values?: unknown[] }, sentAt: number): Promise<pg.QueryResult> {
  const jobIds = outcomeJobIds(config.text, config.values);
  const client = new pg.Client({ ...pool.options, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  client.on("error", () => {});
  try {
    await client.connect();
    const statement = { text: config.text, ...(config.values ? { values: config.values } : {}) };
    if (jobIds === undefined) return await client.query(statement);
    // A failure on the way (a lost connection again) leaves the transaction to end with the
    // connection, rolled back; the next attempt measures and guards afresh.
    await client.query("begin");
    const guard = await client.query<{ relocked: boolean }>(RERUN_GUARD_STATEMENT, [jobIds, performance.now() - sentAt]);
    if (guard.rows[0]!.relocked) {
      await client.query("rollback");
      return { command: "UPDATE", rowCount: 0, oid: 0, rows: [], fields: [] };
    }
    const result = await client.query(statement);
    await client.query("commit");
    return result;
  } finally {
    await client.end().catch(() => {});
  }
}

/** A query config carrying one of graphile-worker's outcome statements. */
function isOutcomeQuery(config: unknown): config is { text: string; values?: unknown[] } {
  return typeof config === "object" && config !== null && typeof (config as { text?: unknown }).text === "string" && isOutcomeStatement((config as { text: string }).text);
}
