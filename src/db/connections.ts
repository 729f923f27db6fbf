import pg from "pg";
import { ConfigError } from "../configFields.ts";

/**
 * How a connection URL keeps sessions. "session": a direct connection or a session-mode pooler,
 * where a client's statements all run in one server session. "transaction": a transaction-mode
 * pooler (PgBouncer pool_mode=transaction, most managed poolers), which hands each transaction
 * to whichever server connection is free, so nothing set on a session outlives its transaction:
 * startup parameters are refused, named prepared statements collide, SET without LOCAL leaks to
 * other clients, LISTEN hears nothing and a session advisory lock stays on a pooled connection.
 */
export type PoolMode = "session" | "transaction";

/**
 * Where pgconverge connects. Through a transaction-mode pooler, `url` carries job and
 * application traffic only, and what needs a session (LISTEN, migrations) goes to `directUrl`
 * when there is one.
 */
export interface DatabaseConnections {
  url: string;
  poolMode: PoolMode;
  /** A direct (session) connection to the same database; only meaningful in transaction mode. */
  directUrl?: string | undefined;
}

/** Where to open a session (LISTEN, migrations): `url` itself unless it is transaction-pooled; then the direct URL, or null. */
export function sessionUrlOf(connections: DatabaseConnections): string | null {
  return connections.poolMode === "session" ? connections.url : (connections.directUrl ?? null);
}

/**
 * Where migrations run when not on `url`'s own pool: a transaction-mode pooler's direct URL,
 * when there is one (a session: no pooler between the migration lock's transaction and the
 * server, and nothing of a migration's own session settings lost); null: on `url`, which is a
 * session, or the pooler, where migrations are safe too (db/migrate.ts). The one place this
 * choice is made, for the worker, the relay, `pgconverge migrate` and runWorker.
 */
export function migrationUrlOf(connections: DatabaseConnections): string | null {
  return connections.poolMode === "transaction" ? (connections.directUrl ?? null) : null;
}

/** The names of the settings a message tells the user to set (the CLI's variables, or runWorker's options). */
export interface SettingNames {
  poolMode: string;
  directUrl: string;
  url: string;
}

export const ENVIRONMENT_NAMES: SettingNames = { poolMode: "DATABASE_POOL_MODE", directUrl: "DATABASE_DIRECT_URL", url: "DATABASE_URL" };

/**
 * How long opening a connection may take, ms: slonik's default for the application pools, made
 * explicit here so that the sessions opened outside a pool (the LISTEN sessions) give up as soon.
 */
export const CONNECT_TIMEOUT_MS = 5_000;

/**
 * TCP keepalive on long-lived connections: a server that vanished without closing the socket
 * (a host or a NAT entry gone) is noticed within a minute or so, instead of never by a client
 * that only waits for notifications.
 */
export const KEEP_ALIVE = { keepAlive: true, keepAliveInitialDelayMillis: 10_000 } as const;

/** Client connections the probe opens at once, and how many times each writes and reads its marker. */
const PROBE_CLIENTS = 3;
const PROBE_ROUNDS = 3;
const PROBE_TIMEOUT_MS = 10_000;

/**
 * Whether `url` keeps sessions: each of a few client connections sets a session-level marker
 * of its own (set_config(..., false)), all at once, then reads it back, all at once. On a
 * session every client reads its own marker, always; through a transaction-mode pooler the
 * reads land on whichever server connections are free, which hold another client's marker or
 * none. A few rounds make a lucky match across all of them vanishingly unlikely; a single
 * mismatch is proof. The probe sends no startup parameter but application_name, which poolers
 * accept, and leaves only a custom setting behind, on connections that are closed at the end.
 */
export async function keepsSessions(url: string): Promise<boolean> {
  const clients = Array.from({ length: PROBE_CLIENTS }, () => new pg.Client({ connectionString: url, application_name: "pgconverge-probe", connectionTimeoutMillis: PROBE_TIMEOUT_MS, query_timeout: PROBE_TIMEOUT_MS }));
  // A server that goes away mid-probe fails the query in flight; the client's own "error" event is not that query's.
  for (const client of clients) client.on("error", () => {});
  try {
    await Promise.all(clients.map((client) => client.connect()));
    for (let round = 0; round < PROBE_ROUNDS; round++) {
      const markers = clients.map((_, index) => `${process.pid}-${round}-${index}-${Math.random()}`);
      await Promise.all(clients.map((client, index) => client.query("select set_config('pgconverge.session_probe', $1, false)", [markers[index]])));
      const seen = await Promise.all(clients.map((client) => client.query<{ marker: string | null }>("select current_setting('pgconverge.session_probe', true) as marker")));
      if (seen.some((result, index) => result.rows[0]?.marker !== markers[index])) return false;
    }
    return true;
  } finally {
    await Promise.all(clients.map((client) => client.end().catch(() => {})));
  }
}

/**
 * Refuses, in one line, settings that would fail later or silently: a DATABASE_URL in session
 * mode that is in fact transaction-pooled, and a direct URL that is not direct (LISTEN on it
 * would hear nothing).
 */
export async function checkPoolMode(connections: DatabaseConnections, names: SettingNames = ENVIRONMENT_NAMES): Promise<void> {
  if (connections.poolMode === "session") {
    if (!(await keepsSessions(connections.url))) {
      throw new ConfigError(
        `${names.url} goes through a transaction-mode pooler (session state does not survive between its transactions): set ${names.poolMode}=transaction, and ${names.directUrl} to a direct connection for LISTEN and migrations`,
      );
    }
  } else if (connections.directUrl !== undefined && !(await keepsSessions(connections.directUrl))) {
    throw new ConfigError(`${names.directUrl} goes through a transaction-mode pooler too: give it a direct connection (or a session-mode pooler), or leave it unset to poll`);
  }
}
