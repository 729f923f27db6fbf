import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import type { DatabasePool } from "slonik";
import { startEmbeddedPostgres } from "../../src/db/embedded.ts";
import { migrate, type AppMigrations } from "../../src/db/migrate.ts";
import { createAppPool, createQueuePool } from "../../src/db/pools.ts";
import { createLogger, type Logger } from "../../src/log.ts";

/** The reference pipeline's migrations, which this repository's tests apply with pgconverge's own. */
export const PIPELINE_MIGRATIONS: AppMigrations = {
  name: "pipeline",
  directory: fileURLToPath(new URL("../../pipeline/sql/", import.meta.url)),
};

export const testLog: Logger = createLogger(process.env.TEST_LOG_LEVEL ?? "silent");

/** Server for this test process: DATABASE_URL (set by `npm test`), or an embedded one of its own. */
let serverUrl: Promise<string> | null = null;
function server(): Promise<string> {
  serverUrl ??= (async () => {
    if (process.env.DATABASE_URL) return process.env.DATABASE_URL;
    const dataDir = mkdtempSync(join(tmpdir(), "pgconverge-test-"));
    const embedded = await startEmbeddedPostgres({ dataDir, persistent: false, settings: { max_connections: "300", fsync: "off" } });
    process.once("beforeExit", () => {
      void embedded.stop().then(() => rmSync(dataDir, { recursive: true, force: true }));
    });
    return embedded.url;
  })();
  return serverUrl;
}

export interface TestDatabase {
  url: string;
  name: string;
  /** Plain pg pool for test assertions and graphile-worker. */
  pool: pg.Pool;
  /** The slonik pool application code uses. */
  appPool: DatabasePool;
  /** Runs SQL, returning rows. */
  query<Row extends pg.QueryResultRow = Record<string, unknown>>(text: string, values?: unknown[]): Promise<Row[]>;
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

/**
 * A fresh database on the test server, migrated (pgconverge's set and, unless `pipeline` is
 * false, the reference pipeline's), dropped when the test ends. Every test gets its own, so
 * test files run in parallel without seeing each other's jobs.
 */
export async function createTestDatabase(
  t: Teardown,
  options: { migrate?: boolean; pipeline?: boolean; concurrency?: number } = {},
): Promise<TestDatabase> {
  const adminUrl = await server();
  const name = `pgc_test_${randomBytes(6).toString("hex")}`;
  const migrations = options.migrate === false ? undefined : options.pipeline === false ? {} : { app: PIPELINE_MIGRATIONS };
  const template = migrations ? await migratedTemplate(adminUrl, migrations) : undefined;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`create database ${name}${template ? ` template ${template}` : ""}`);
  await admin.end();
  const url = withDatabase(adminUrl, name);
  const pool = createQueuePool(url, options.concurrency ?? 4);
  // A copy of a database gets an owner id of its own (the qdrant_owner comment says so): two
  // clones of the template sharing a Qdrant collection must not pass for one database.
  if (template) await pool.query("update qdrant_owner set owner_id = gen_random_uuid()");
  const appPool = await createAppPool(url, options.concurrency ?? 4, { statementTimeoutMs: 30_000 });
  t.teardown(async () => {
    await appPool.end();
    await pool.end();
    const cleanup = new pg.Client({ connectionString: adminUrl });
    await cleanup.connect();
    await cleanup.query(`drop database if exists ${name} with (force)`);
    await cleanup.end();
  });
  return {
    url,
    name,
    pool,
    appPool,
    query: async (text, values) => (await pool.query(text, values)).rows,
  };
}

/** This process's migrated templates, by name. */
const templates = new Map<string, Promise<string>>();

/**
 * A database migrated with these migrations, to clone test databases from: a clone is a file
 * copy, where migrating each of the suite's databases ran graphile-worker's and pgconverge's
 * migrations a hundred times over. Named by a hash of everything that decides its contents (the
 * migration files, the migrator, graphile-worker's version), so a changed migration gets a
 * new template and a persistent server never hands out a stale one. Built under a temporary
 * name and renamed when complete, under an advisory lock, so parallel test files build it
 * once and never clone a half-migrated one; connections to it are then refused, because
 * CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template.
 */
function migratedTemplate(adminUrl: string, migrations: { app?: AppMigrations }): Promise<string> {
  const name = `pgc_template_${templateHash(migrations)}`;
  let template = templates.get(name);
  if (!template) {
    template = buildTemplate(adminUrl, name, migrations);
    templates.set(name, template);
  }
  return template;
}

async function buildTemplate(adminUrl: string, name: string, migrations: { app?: AppMigrations }): Promise<string> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query("select pg_advisory_lock(hashtext($1))", [name]);
    const exists = await admin.query("select 1 from pg_database where datname = $1", [name]);
    if (exists.rowCount === 0) {
      const building = `${name}_${randomBytes(4).toString("hex")}`;
      await admin.query(`create database ${building}`);
      const pool = createQueuePool(withDatabase(adminUrl, building), 2);
      try {
        await migrate(pool, testLog, migrations);
      } finally {
        await pool.end();
      }
      await admin.query(`alter database ${building} rename to ${name}`);
      await admin.query(`alter database ${name} with allow_connections false`);
    }
    return name;
  } finally {
    await admin.end();
  }
}

function templateHash(migrations: { app?: AppMigrations }): string {
  const hash = createHash("sha256");
  const directories = [fileURLToPath(new URL("../../sql/", import.meta.url)), ...(migrations.app ? [migrations.app.directory] : [])];
  for (const directory of directories) {
    const files = readdirSync(directory, { recursive: true, withFileTypes: true })
      .filter((entry) => entry.isFile())
      .map((entry) => join(entry.parentPath, entry.name))
      .sort();
    for (const file of files) hash.update(relative(directory, file)).update(readFileSync(file));
  }
  hash.update(readFileSync(fileURLToPath(new URL("../../src/db/migrate.ts", import.meta.url))));
  hash.update(readFileSync(fileURLToPath(new URL("../../node_modules/graphile-worker/package.json", import.meta.url))));
  return hash.digest("hex").slice(0, 16);
}

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

/** Polls `check` until it returns a value other than undefined/false, or fails after the deadline. */
export async function waitFor<T>(
  description: string,
  check: () => Promise<T | undefined | false>,
  { timeoutMs = 30_000, intervalMs = 50 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${description}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
