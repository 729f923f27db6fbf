// What the benchmarks share: one Postgres server (embedded unless DATABASE_URL), a fresh
// database per scenario, timing and percentile helpers, and a description of the machine.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, totalmem, tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { startEmbeddedPostgres } from "../src/db/embedded.ts";

export interface BenchServer {
  /** Connection string of the server's `postgres` database (used to create and drop databases). */
  adminUrl: string;
  embedded: boolean;
  stop(): Promise<void>;
}

/**
 * DATABASE_URL when set (databases are created and dropped on it), otherwise a throwaway
 * embedded Postgres with its default settings: fsync and synchronous_commit on, as users run it.
 */
export async function startServer(): Promise<BenchServer> {
  if (process.env.DATABASE_URL) return { adminUrl: process.env.DATABASE_URL, embedded: false, stop: async () => {} };
  const dataDir = mkdtempSync(join(tmpdir(), "pgconverge-bench-"));
  const server = await startEmbeddedPostgres({ dataDir, persistent: false, settings: { max_connections: "200" } });
  return {
    adminUrl: server.url,
    embedded: true,
    stop: async () => {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A process's time on a CPU so far, all its threads, ns (/proc/PID/task/TID/schedstat, exact, not
 * in clock ticks; a Node.js process's GC and libuv threads count too); null once it has ended or
 * off Linux.
 */
export function onCpuNs(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/task`).reduce((sum, thread) => sum + Number(readFileSync(`/proc/${pid}/task/${thread}/schedstat`, "utf8").split(" ")[0]), 0);
  } catch {
    return null;
  }
}

export interface BenchDatabase {
  url: string;
  name: string;
  /** Drops the database, disconnecting whatever is still connected. */
  drop(): Promise<void>;
}

export async function createDatabase(server: BenchServer, label: string): Promise<BenchDatabase> {
  const name = `pgc_bench_${label}_${randomBytes(4).toString("hex")}`;
  await withAdmin(server, (admin) => admin.query(`create database ${name}`));
  const url = new URL(server.adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: () => withAdmin(server, (admin) => admin.query(`drop database if exists ${name} with (force)`)).then(() => {}),
  };
}

async function withAdmin<T>(server: BenchServer, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.end();
  }
}

export interface Machine {
  cpus: number;
  cpu: string | undefined;
  memoryGb: number;
  node: string;
  postgres: string;
  postgresServer: "embedded" | "DATABASE_URL";
  fsync: string;
  synchronousCommit: string;
  loadAverageAtStart: number[];
}

export async function describeMachine(server: BenchServer): Promise<Machine> {
  const setting = (name: string) => withAdmin(server, async (admin) => String((await admin.query(`show ${name}`)).rows[0][name]));
  return {
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    memoryGb: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    postgres: await setting("server_version"),
    postgresServer: server.embedded ? "embedded" : "DATABASE_URL",
    fsync: await setting("fsync"),
    synchronousCommit: await setting("synchronous_commit"),
    loadAverageAtStart: loadavg().map((value) => Math.round(value * 100) / 100),
  };
}

/**
 * A pg pool that ignores errors of idle clients (a dropped database terminates them; the query
 * in flight, if any, still fails on its own). Without a handler pg would crash the process.
 */
export function benchPool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on("error", () => {});
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}

// A deadline already past sleeps 0 ms (Node 24 warns of a negative timeout).
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** Polls until `check` is true; throws after the deadline so a stuck scenario fails loudly. */
export async function waitUntil(description: string, check: () => Promise<boolean>, { timeoutMs = 300_000, intervalMs = 25 } = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`bench: timed out after ${timeoutMs} ms waiting for ${description}`);
    await sleep(intervalMs);
  }
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export const round = (value: number, digits = 0) => {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
};

/** Numeric environment setting with a default; a non-positive or non-numeric value is an error. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number (got ${JSON.stringify(raw)})`);
  return value;
}
