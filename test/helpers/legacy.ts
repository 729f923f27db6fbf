// pgconverge 0.1's way of migrating, reproduced for the upgrade tests: its one-set
// `migrations` table and its files (kept in sql/legacy-0.1/), applied one transaction each.
import { fileURLToPath } from "node:url";
import type pg from "pg";
import { runMigrations } from "graphile-worker";
import { readMigrations } from "../../src/db/migrate.ts";

export const LEGACY_DIR = fileURLToPath(new URL("../../sql/legacy-0.1/", import.meta.url));

/** Migrates like 0.1 did, up to and including 0.1's migration `upTo` (all seven by default). */
export async function migrateAs01(pool: pg.Pool, upTo = 7): Promise<void> {
  await runMigrations({ pgPool: pool, logger: undefined });
  await pool.query(`
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
  const client = await pool.connect();
  try {
    for (const migration of readMigrations(LEGACY_DIR).slice(0, upTo)) {
      await client.query("begin");
      await client.query(migration.sql);
      await client.query("insert into migrations (id, name, checksum) values ($1, $2, $3)", [migration.id, migration.name, migration.checksum]);
      await client.query("commit");
    }
  } finally {
    client.release();
  }
}

/**
 * The schema of a database as lines to compare: tables, views and sequences (with comments and
 * grants), columns in order (type, default, nullability, identity, comment), constraints,
 * indexes (pgconverge's in graphile_worker too), views' definitions, functions (definition,
 * comment, grants), triggers and default privileges. Data is not part of it.
 */
export async function schemaOf(pool: pg.Pool): Promise<string[]> {
  const { rows } = await pool.query<{ line: string }>(`
    with rel as (
      select c.oid, c.relname, c.relkind, c.relacl from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = current_schema() and c.relkind in ('r', 'v', 'S', 'i')
    )
    select concat_ws(' | ', 'relation', relname, relkind, obj_description(oid, 'pg_class'), relacl::text) as line from rel
    union all
    select concat_ws(' | ', 'column', rel.relname, row_number() over (partition by rel.oid order by a.attnum), a.attname,
      format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull, a.attidentity, col_description(rel.oid, a.attnum))
    from rel join pg_attribute a on a.attrelid = rel.oid and a.attnum > 0 and not a.attisdropped
    left join pg_attrdef d on d.adrelid = rel.oid and d.adnum = a.attnum
    where rel.relkind in ('r', 'v')
    union all
    select concat_ws(' | ', 'constraint', rel.relname, con.conname, pg_get_constraintdef(con.oid), obj_description(con.oid, 'pg_constraint'))
    from pg_constraint con join rel on rel.oid = con.conrelid
    union all
    select concat_ws(' | ', 'index', schemaname, indexname, indexdef, obj_description(format('%I.%I', schemaname, indexname)::regclass, 'pg_class'))
    from pg_indexes where schemaname = current_schema() or indexname like 'pgconverge%'
    union all
    select concat_ws(' | ', 'view', relname, pg_get_viewdef(oid)) from rel where relkind = 'v'
    union all
    select concat_ws(' | ', 'function', pg_get_functiondef(p.oid), obj_description(p.oid, 'pg_proc'), p.proacl::text)
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname = current_schema()
    union all
    select concat_ws(' | ', 'trigger', pg_get_triggerdef(tg.oid)) from pg_trigger tg join rel on rel.oid = tg.tgrelid where not tg.tgisinternal
    union all
    select concat_ws(' | ', 'default privileges', n.nspname, d.defaclobjtype, d.defaclacl::text)
    from pg_default_acl d left join pg_namespace n on n.oid = d.defaclnamespace
    order by 1
  `);
  return rows.map((row) => row.line);
}
