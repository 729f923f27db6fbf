import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type pg from "pg";
import { runMigrations } from "graphile-worker";
import type { Logger } from "../log.ts";
import { graphileLogger } from "../log.ts";

/** Advisory lock key held while migrating, so workers starting together take turns. */
const MIGRATION_LOCK_KEY = 7_310_245_611;
const MIGRATION_FILE = /^(\d{6})_[a-z0-9_]+\.sql$/;
const SQL_DIR = fileURLToPath(new URL("../../sql/", import.meta.url));
/** pgconverge 0.1's migrations, read only to upgrade a database 0.1 migrated. */
const LEGACY_DIR = fileURLToPath(new URL("../../sql/legacy-0.1/", import.meta.url));

/** The set of pgconverge's own migrations (`sql/` of the package), always applied first. */
export const CORE_SET = "pgconverge";
/** The set 0.1's records are kept under once a 0.1 database is upgraded. */
const LEGACY_SET = "pgconverge-0.1";
/** An application's set name: lowercase, like a package name without a scope; `pgconverge*` is ours. */
const APP_SET_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

export class MigrationError extends Error {
  override name = "MigrationError";
}

/**
 * The database's schema is not the one this version of pgconverge works with (not migrated,
 * a migration pending, changed or unknown): the CLI reports it in one line, exit code 2.
 */
export class SchemaError extends Error {
  override name = "SchemaError";
}

const UNDEFINED_TABLE = "42P01";
const UNDEFINED_COLUMN = "42703";

export interface Migration {
  id: number;
  name: string;
  sql: string;
  checksum: string;
}

/** An application's own migrations: a set name and the directory of its numbered files. */
export interface AppMigrations {
  name: string;
  directory: string;
}

export interface MigrationOptions {
  /** The application's migrations, applied after pgconverge's own and recorded apart. */
  app?: AppMigrations;
  /** pgconverge's own migrations; default the files of `sql/` (tests pass others). */
  core?: readonly Migration[];
}

interface MigrationSet {
  name: string;
  migrations: readonly Migration[];
}

function migrationSets(options: MigrationOptions): MigrationSet[] {
  const sets: MigrationSet[] = [{ name: CORE_SET, migrations: options.core ?? readMigrations() }];
  if (options.app) sets.push({ name: appSetName(options.app.name), migrations: readMigrations(options.app.directory) });
  return sets;
}

function appSetName(name: string): string {
  if (!APP_SET_NAME.test(name) || name.startsWith("pgconverge")) {
    throw new MigrationError(
      `migration set name ${JSON.stringify(name)} is not valid: use lowercase letters, digits, "_" and "-", starting with a letter, at most 63 characters, not beginning with "pgconverge"`,
    );
  }
  return name;
}

/** How a migration is named in messages: core files by their name, an application's as set/name. */
function label(set: string, name: string): string {
  return set === CORE_SET ? name : `${set}/${name}`;
}

export type SchemaState = { ok: true } | { ok: false; reason: string };

interface Recorded {
  set: string;
  id: number;
  name: string;
  checksum: string;
}

/**
 * Whether the migrations recorded in the database are exactly this version's (none pending,
 * none changed, none newer than this version knows), for pgconverge's set and, when given,
 * the application's; sets of other applications are not this process's business. One
 * statement, never a write. Commands that need the schema check this first, so that an
 * unmigrated database is named as such instead of failing on the first missing relation.
 */
export async function checkMigrations(db: Pick<pg.Pool, "query">, options: MigrationOptions = {}): Promise<SchemaState> {
  const sets = migrationSets(options);
  let rows: Recorded[];
  try {
    ({ rows } = await db.query<Recorded>("select set, id, name, checksum from migrations order by set, id"));
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === UNDEFINED_TABLE) return { ok: false, reason: "migrations not applied (run pgconverge migrate)" };
    if (code === UNDEFINED_COLUMN) return { ok: false, reason: "the schema is pgconverge 0.1's (run pgconverge migrate to upgrade it)" };
    throw error;
  }
  const changed: string[] = [];
  const pending: string[] = [];
  const newer: string[] = [];
  for (const set of sets) {
    const recorded = new Map(rows.filter((row) => row.set === set.name).map((row) => [row.id, row]));
    for (const migration of set.migrations) {
      const row = recorded.get(migration.id);
      if (!row) pending.push(label(set.name, migration.name));
      else if (row.checksum !== migration.checksum || row.name !== migration.name) changed.push(label(set.name, migration.name));
    }
    for (const row of recorded.values()) {
      if (!set.migrations.some((migration) => migration.id === row.id)) newer.push(label(set.name, row.name));
    }
  }
  if (changed.length > 0) return { ok: false, reason: `applied migration differs from its file: ${changed.join(", ")}` };
  if (pending.length > 0) return { ok: false, reason: `migrations pending: ${pending.join(", ")} (run pgconverge migrate)` };
  if (newer.length > 0) return { ok: false, reason: `the database has migrations this version does not know: ${newer.join(", ")}` };
  return { ok: true };
}

/** The numbered files of a migration directory (default `sql/`), in order, numbered from 1. */
export function readMigrations(dir = SQL_DIR): Migration[] {
  let names: string[];
  try {
    names = readdirSync(dir, { withFileTypes: true }).filter((entry) => entry.isFile() && entry.name.endsWith(".sql")).map((entry) => entry.name);
  } catch (error) {
    throw new MigrationError(`cannot read the migrations directory ${dir}: ${(error as Error).message}`);
  }
  const migrations = names
    .map((name) => {
      const match = MIGRATION_FILE.exec(name);
      if (!match) throw new MigrationError(`${name}: migration files are named NNNNNN_snake_case.sql`);
      const sql = readFileSync(`${dir}/${name}`, "utf8");
      return { id: Number(match[1]), name, sql, checksum: createHash("sha256").update(sql).digest("hex") };
    })
    .sort((a, b) => a.id - b.id);
  migrations.forEach((migration, index) => {
    if (migration.id !== index + 1) throw new MigrationError(`${migration.name}: expected migration number ${index + 1}`);
  });
  return migrations;
}

const CREATE_MIGRATIONS_TABLE = `
  create table migrations (
    set text not null check (set ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    id integer not null check (id > 0),
    name text not null,
    checksum text not null check (checksum ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz not null default now(),
    primary key (set, id),
    unique (set, name)
  );
  comment on table migrations is 'Schema migrations applied, per set: pgconverge''s own (set pgconverge, from its sql/) first, then the application''s (a set it names); each applied in order, forward-only. graphile-worker tracks its own in graphile_worker.migrations.';
  comment on column migrations.set is 'Whose migration: pgconverge, an application''s set name, or pgconverge-0.1 (the files of 0.1, kept as history after an upgrade).';
  comment on column migrations.id is 'The file''s number, NNNNNN, counted from 1 in each set.';
  comment on column migrations.name is 'The file name.';
  comment on column migrations.applied_at is 'When it was applied (for a baseline adopted from 0.1: when it was recorded).';
  comment on column migrations.checksum is 'sha256 of the file as applied; a later edit of the file is refused.';
`;

/**
 * Applies graphile-worker's schema, then every pgconverge migration not yet recorded, then the
 * application's (if given), each in its own transaction, all under one advisory lock (see
 * holdMigrationLock; the pool must give two connections at once). A
 * database migrated by pgconverge 0.1 is upgraded first (see adoptLegacy). Forward-only: a
 * recorded migration whose file changed is an error, never re-run. Idempotent, and safe when
 * many processes start at once. Resolves with the migrations applied now (set/name for an
 * application's).
 */
export async function migrate(pool: pg.Pool, log: Logger, options: MigrationOptions = {}): Promise<string[]> {
  const sets = migrationSets(options);
  const lock = await holdMigrationLock(pool);
  const applied: string[] = [];
  try {
    await runMigrations({ pgPool: pool, logger: graphileLogger(log) });
    const client = await pool.connect();
    try {
      applied.push(...(await applySets(client, sets, log)));
    } finally {
      client.release();
    }
  } finally {
    await lock.release();
  }
  return applied;
}

/** While another process migrates, how often to try for the lock again, ms. */
const LOCK_RETRY_MS = 100;

/**
 * Takes the migration lock and holds it until release(): a transaction-level advisory lock,
 * in a transaction kept open on a connection of its own while the migrations run on others.
 * A session-level lock would do on a direct connection, but through a transaction-mode pooler
 * the server connection returns to the pool after each statement: concurrent migrators would
 * not be serialised, and the lock would stay on a pooled connection for whoever gets it next.
 * An open transaction keeps its server connection on any pooler, and ends (releasing the lock)
 * when its client goes away, however the process dies. The transaction writes nothing.
 * The lock is tried, not waited for: a waiting transaction would pin a server connection, and
 * ten workers starting behind a pool of five would pin them all while the one holding the
 * lock waits for a connection to migrate on. Waiting outside a transaction, migrating needs two
 * server connections however many processes start at once.
 */
async function holdMigrationLock(pool: pg.Pool): Promise<{ release(): Promise<void> }> {
  const client = await pool.connect();
  try {
    for (;;) {
      await client.query("begin");
      // A server-wide idle_in_transaction_session_timeout would end the lock mid-migration.
      await client.query("set local idle_in_transaction_session_timeout = 0");
      const { rows } = await client.query<{ locked: boolean }>("select pg_try_advisory_xact_lock($1) as locked", [MIGRATION_LOCK_KEY]);
      if (rows[0]!.locked) break;
      await client.query("rollback");
      await sleep(LOCK_RETRY_MS * (0.5 + Math.random()));
    }
  } catch (error) {
    client.release(true);
    throw error;
  }
  return {
    async release() {
      const ended = await client.query("rollback").then(() => true, () => false);
      client.release(!ended);
    },
  };
}

/** Applies the sets' pending migrations on `client`, under the caller's lock. */
async function applySets(client: pg.PoolClient, sets: readonly MigrationSet[], log: Logger): Promise<string[]> {
  const applied: string[] = [];
  const shape = await migrationsTableShape(client);
  if (shape === "none") await client.query(CREATE_MIGRATIONS_TABLE);
  if (shape === "0.1") applied.push(...(await adoptLegacy(client, log)));
  const { rows } = await client.query<Recorded>("select set, id, name, checksum from migrations order by set, id");
  for (const set of sets) {
    const recorded = new Map(rows.filter((row) => row.set === set.name).map((row) => [row.id, row]));
    for (const migration of set.migrations) {
      const name = label(set.name, migration.name);
      const done = recorded.get(migration.id);
      if (done) {
        if (done.checksum !== migration.checksum || done.name !== migration.name) {
          throw new MigrationError(`${name} differs from the applied ${label(set.name, done.name)}; migrations are forward-only, add a new file instead`);
        }
        continue;
      }
      await client.query("begin");
      try {
        await client.query(migration.sql);
        await client.query("insert into migrations (set, id, name, checksum) values ($1, $2, $3, $4)", [set.name, migration.id, migration.name, migration.checksum]);
        await client.query("commit");
      } catch (error) {
        await client.query("rollback");
        throw new MigrationError(`${name}: ${(error as Error).message}`);
      }
      applied.push(name);
      log.info({ migration: name }, "migration applied");
    }
    const newest = Math.max(0, ...recorded.keys());
    if (newest > set.migrations.length) {
      throw new MigrationError(
        set.name === CORE_SET
          ? `the database has migration ${newest} but this version of pgconverge knows only ${set.migrations.length}; upgrade pgconverge`
          : `the database has migration ${newest} of set ${set.name} but its directory has only ${set.migrations.length}; run the application's newer version`,
      );
    }
  }
  return applied;
}

async function migrationsTableShape(client: pg.PoolClient): Promise<"none" | "0.1" | "sets"> {
  const { rows } = await client.query<{ present: boolean; sets: boolean }>(`
    select to_regclass('migrations') is not null as present,
      exists (select 1 from pg_attribute where attrelid = to_regclass('migrations') and attname = 'set' and not attisdropped) as sets
  `);
  return !rows[0]!.present ? "none" : rows[0]!.sets ? "sets" : "0.1";
}

/** What 0.2's baselines are, as recorded when a 0.1 database is adopted (sql/legacy-0.1/adopt/baseline.json). */
interface Baseline {
  sets: Record<string, { id: number; name: string; checksum: string }[]>;
}

/**
 * Upgrades a database migrated by pgconverge 0.1, whose `migrations` table (one set, no `set`
 * column) records a prefix of 0.1's seven files: applies the files it lacks, words its
 * comments as 0.2's baseline does, and records 0.2's baselines as applied without running them
 * (0.1's files made those objects: pgconverge's own, and the reference pipeline's documents
 * and chunks, which 0.1 kept among its own). One transaction, under the caller's lock.
 * Anything else in that table is refused: it is not a schema this code knows how to adopt.
 */
async function adoptLegacy(client: pg.PoolClient, log: Logger): Promise<string[]> {
  const legacy = readMigrations(LEGACY_DIR);
  const baseline = JSON.parse(readFileSync(`${LEGACY_DIR}/adopt/baseline.json`, "utf8")) as Baseline;
  const { rows } = await client.query<{ id: number; name: string; checksum: string; applied_at: Date }>(
    "select id, name, checksum, applied_at from migrations order by id",
  );
  rows.forEach((row, index) => {
    const file = legacy[index];
    if (!file || file.id !== row.id || file.name !== row.name || file.checksum !== row.checksum) {
      throw new MigrationError(
        `the migrations table records ${row.name} (${row.checksum.slice(0, 12)}…), which is not pgconverge 0.1's; this database cannot be upgraded automatically`,
      );
    }
  });
  const applied: string[] = [];
  await client.query("begin");
  try {
    for (const file of legacy.slice(rows.length)) {
      await client.query(file.sql);
      await client.query("insert into migrations (id, name, checksum) values ($1, $2, $3)", [file.id, file.name, file.checksum]);
      applied.push(label(LEGACY_SET, file.name));
    }
    await client.query(readFileSync(`${LEGACY_DIR}/adopt/comments.sql`, "utf8"));
    const history = await client.query<{ id: number; name: string; checksum: string; applied_at: Date }>(
      "select id, name, checksum, applied_at from migrations order by id",
    );
    await client.query("drop table migrations");
    await client.query(CREATE_MIGRATIONS_TABLE);
    for (const row of history.rows) {
      await client.query("insert into migrations (set, id, name, checksum, applied_at) values ($1, $2, $3, $4, $5)", [LEGACY_SET, row.id, row.name, row.checksum, row.applied_at]);
    }
    for (const [set, records] of Object.entries(baseline.sets)) {
      for (const record of records) {
        await client.query("insert into migrations (set, id, name, checksum) values ($1, $2, $3, $4)", [set, record.id, record.name, record.checksum]);
      }
    }
    await client.query("commit");
  } catch (error) {
    await client.query("rollback");
    throw new MigrationError(`upgrading the schema of pgconverge 0.1: ${(error as Error).message}`);
  }
  log.info({ applied, baselines: Object.keys(baseline.sets) }, "schema of pgconverge 0.1 upgraded: 0.2's baselines recorded as applied");
  return applied;
}
