import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type pg from "pg";
import { runMigrations } from "graphile-worker";
import type { Logger } from "../log.ts";
import { graphileLogger } from "../log.ts";

/** Session advisory lock key held while migrating, so workers starting together take turns. */
const MIGRATION_LOCK_KEY = 7_310_245_611;
const MIGRATION_FILE = /^(\d{6})_[a-z0-9_]+\.sql$/;
const SQL_DIR = fileURLToPath(new URL("../../sql/", import.meta.url));

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

export type SchemaState = { ok: true } | { ok: false; reason: string };

/**
 * Whether the migrations recorded in the database are exactly `expected` (none pending, none
 * changed, none newer than this version knows); one statement, never a write. Commands that
 * need the schema check this first, so that an unmigrated database is named as such instead of
 * failing on the first missing relation.
 */
export async function checkMigrations(db: Pick<pg.Pool, "query">, expected: readonly Migration[] = readMigrations()): Promise<SchemaState> {
  let rows: { id: number; name: string; checksum: string }[];
  try {
    ({ rows } = await db.query<{ id: number; name: string; checksum: string }>("select id, name, checksum from migrations order by id"));
  } catch (error) {
    if ((error as { code?: string }).code === UNDEFINED_TABLE) return { ok: false, reason: "migrations not applied (run pgconverge migrate)" };
    throw error;
  }
  const recorded = new Map(rows.map((row) => [row.id, row]));
  const changed = expected.filter((migration) => {
    const row = recorded.get(migration.id);
    return row && (row.checksum !== migration.checksum || row.name !== migration.name);
  });
  if (changed.length > 0) return { ok: false, reason: `applied migration differs from its file: ${changed.map((m) => m.name).join(", ")}` };
  const pending = expected.filter((migration) => !recorded.has(migration.id));
  if (pending.length > 0) return { ok: false, reason: `migrations pending: ${pending.map((m) => m.name).join(", ")} (run pgconverge migrate)` };
  const newer = rows.filter((row) => !expected.some((migration) => migration.id === row.id));
  if (newer.length > 0) return { ok: false, reason: `the database has migrations this version does not know: ${newer.map((row) => row.name).join(", ")}` };
  return { ok: true };
}

export interface Migration {
  id: number;
  name: string;
  sql: string;
  checksum: string;
}

/** The numbered files of `sql/`, in order. */
export function readMigrations(dir = SQL_DIR): Migration[] {
  const migrations = readdirSync(dir)
    .filter((name) => name.endsWith(".sql"))
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

/**
 * Applies graphile-worker's schema and then every `sql/` migration not yet recorded, each in
 * its own transaction. Forward-only: a recorded migration whose file changed is an error,
 * never re-run. Idempotent, and safe when many processes start at once.
 */
export async function migrate(pool: pg.Pool, log: Logger, migrations = readMigrations()): Promise<string[]> {
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    await runMigrations({ pgPool: pool, logger: graphileLogger(log) });
    await client.query(`
      create table if not exists migrations (
        id integer primary key check (id > 0),
        name text not null unique,
        checksum text not null check (checksum ~ '^[0-9a-f]{64}$'),
        applied_at timestamptz not null default now()
      );
      comment on table migrations is 'pgconverge schema migrations from sql/, applied in order, forward-only; graphile-worker tracks its own in graphile_worker.migrations.';
      comment on column migrations.id is 'The file''s number, NNNNNN.';
      comment on column migrations.name is 'The file name in sql/.';
      comment on column migrations.applied_at is 'When it was applied.';
      comment on column migrations.checksum is 'sha256 of the file as applied; a later edit of the file is refused.';
    `);
    const { rows } = await client.query<{ id: number; name: string; checksum: string }>(
      "select id, name, checksum from migrations order by id",
    );
    const recorded = new Map(rows.map((row) => [row.id, row]));
    for (const migration of migrations) {
      const done = recorded.get(migration.id);
      if (done) {
        if (done.checksum !== migration.checksum || done.name !== migration.name) {
          throw new MigrationError(
            `${migration.name} differs from the applied ${done.name}; migrations are forward-only, add a new file instead`,
          );
        }
        continue;
      }
      await client.query("begin");
      try {
        await client.query(migration.sql);
        await client.query("insert into migrations (id, name, checksum) values ($1, $2, $3)", [
          migration.id,
          migration.name,
          migration.checksum,
        ]);
        await client.query("commit");
      } catch (error) {
        await client.query("rollback");
        throw new MigrationError(`${migration.name}: ${(error as Error).message}`);
      }
      applied.push(migration.name);
      log.info({ migration: migration.name }, "migration applied");
    }
    const newest = Math.max(0, ...rows.map((row) => row.id));
    const known = migrations.length;
    if (newest > known) {
      throw new MigrationError(`the database has migration ${newest} but this version of pgconverge knows only ${known}; upgrade pgconverge`);
    }
  } finally {
    await client.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]).catch(() => {});
    client.release();
  }
  return applied;
}
