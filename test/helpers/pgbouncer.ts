import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { accessSync, chmodSync, chownSync, constants, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { createAppPool, createQueuePool } from "../../src/db/pools.ts";
import { waitFor, type TestDatabase } from "./db.ts";

/** Where the PgBouncer binary is: on PATH, or where the Debian package puts it; null when absent. */
export function pgbouncerBinary(): string | null {
  const candidates = [...(process.env.PATH ?? "").split(":").filter(Boolean).map((dir) => join(dir, "pgbouncer")), "/usr/sbin/pgbouncer"];
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** tap's `skip` for pooler tests: false when PgBouncer is installed, else why they skip. */
export const SKIP_WITHOUT_PGBOUNCER: false | string = pgbouncerBinary() === null ? "pgbouncer is not installed (apt-get install pgbouncer); the pooler tests need a real one" : false;

export interface PgBouncerOptions {
  /** Server connections per database and user (default_pool_size). Default 10. */
  poolSize?: number;
  /** Server connections per database, all users together (max_db_connections); 0 is no limit. Default 0. */
  maxDbConnections?: number;
}

export interface PgBouncer {
  port: number;
  /** `url` (a database on the upstream server) as reached through this PgBouncer. */
  urlFor(url: string): string;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

/**
 * Starts a real PgBouncer in transaction mode in front of `upstreamUrl`'s server (every database
 * on it, as the upstream user), on a free port, with its ini, user list and log in a temporary
 * directory; stopped and removed when the test ends. As root it runs as the `postgres` system
 * user (or `nobody`), because PgBouncer refuses to run as root.
 */
export async function startPgBouncer(t: Teardown, upstreamUrl: string, options: PgBouncerOptions = {}): Promise<PgBouncer> {
  const binary = pgbouncerBinary();
  if (binary === null) throw new Error("pgbouncer is not installed");
  const upstream = new URL(upstreamUrl);
  const user = decodeURIComponent(upstream.username) || "postgres";
  const password = decodeURIComponent(upstream.password);
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-pgbouncer-"));
  const port = await freePort();
  const account = process.getuid?.() === 0 ? systemAccount() : null;
  const server = [`host=${upstream.hostname}`, `port=${upstream.port || 5432}`, `user=${user}`, ...(password ? [`password=${password}`] : [])].join(" ");
  writeFileSync(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `* = ${server}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = trust",
      `auth_file = ${join(dir, "userlist.txt")}`,
      "pool_mode = transaction",
      `default_pool_size = ${options.poolSize ?? 10}`,
      `max_db_connections = ${options.maxDbConnections ?? 0}`,
      "max_client_conn = 2000",
      // Clients wait for a server connection rather than fail: the pool is meant to be the bottleneck.
      "query_wait_timeout = 120",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      "log_connections = 0",
      "log_disconnections = 0",
      "",
    ].join("\n"),
  );
  writeFileSync(join(dir, "userlist.txt"), `"${user}" ""\n`);
  if (account) {
    for (const file of ["", "pgbouncer.ini", "userlist.txt"]) chownSync(join(dir, file), account.uid, account.gid);
    chmodSync(dir, 0o755);
  }
  const child: ChildProcess = spawn(binary, [join(dir, "pgbouncer.ini")], { stdio: ["ignore", "ignore", "pipe"], ...(account ?? {}) });
  let stderr = "";
  child.stderr!.on("data", (chunk) => (stderr = (stderr + chunk).slice(-4_000)));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  });
  const urlFor = (url: string) => {
    const through = new URL(url);
    through.hostname = "127.0.0.1";
    through.port = String(port);
    through.password = "";
    return through.toString();
  };
  await waitFor(
    `PgBouncer on port ${port} to accept connections`,
    async () => {
      if (child.exitCode !== null) throw new Error(`pgbouncer exited with code ${child.exitCode}: ${stderr}`);
      const client = new pg.Client({ connectionString: urlFor(withPath(upstreamUrl, "/postgres")) });
      client.on("error", () => {});
      try {
        await client.connect();
        await client.query("select 1");
        return true;
      } catch {
        return false;
      } finally {
        await client.end().catch(() => {});
      }
    },
    { timeoutMs: 10_000, intervalMs: 50 },
  );
  return { port, urlFor };
}

function withPath(url: string, path: string): string {
  const parsed = new URL(url);
  parsed.pathname = path;
  return parsed.toString();
}

/** The uid/gid of `postgres`, else `nobody`: PgBouncer will not run as root. */
function systemAccount(): { uid: number; gid: number } {
  for (const name of ["postgres", "nobody"]) {
    const uid = spawnSync("id", ["-u", name], { encoding: "utf8" });
    const gid = spawnSync("id", ["-g", name], { encoding: "utf8" });
    if (uid.status === 0 && gid.status === 0) return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  }
  throw new Error("running as root, PgBouncer needs a postgres or nobody system user to run as");
}

/** A port nothing listens on now (the OS picks it; PgBouncer binds it a moment later). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * `db` as an application reaches it through `bouncer` in DATABASE_POOL_MODE=transaction: a pg pool
 * and a slonik pool on the pooled URL, made as the worker makes them; closed when the test ends.
 * The database is the same, so `db` itself still reads it directly.
 */
export async function throughPooler(t: Teardown, db: TestDatabase, bouncer: PgBouncer, concurrency = 4): Promise<TestDatabase> {
  const url = bouncer.urlFor(db.url);
  const pool = createQueuePool(url, concurrency);
  const appPool = await createAppPool(url, concurrency, { statementTimeoutMs: 30_000, poolMode: "transaction" });
  t.teardown(async () => {
    await appPool.end();
    await pool.end();
  });
  return { url, name: db.name, pool, appPool, query: async (text, values) => (await pool.query(text, values)).rows };
}
