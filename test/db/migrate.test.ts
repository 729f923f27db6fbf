import t from "tap";
import { migrate, readMigrations } from "../../src/db/migrate.ts";
import { createTestDatabase, testLog } from "../helpers/db.ts";

t.test("migrations apply once, even when several processes migrate at the same moment", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const results = await Promise.all(Array.from({ length: 4 }, () => migrate(db.pool, testLog)));
  const expected = readMigrations().map((migration) => migration.name);
  t.same(results.flat().sort(), expected, "each migration applied by exactly one of them");
  const recorded = await db.query<{ name: string }>("select name from migrations order by id");
  t.same(recorded.map((row) => row.name), expected);
  t.same(await migrate(db.pool, testLog), [], "a later run applies nothing");
  const [gw] = await db.query<{ count: string }>("select count(*) from graphile_worker.migrations");
  t.ok(Number(gw!.count) > 0, "graphile-worker's schema is installed too");
});

t.test("an applied migration that was edited afterwards is refused, not re-run", async (t) => {
  const db = await createTestDatabase(t);
  const edited = readMigrations().map((migration, index) =>
    index === 0 ? { ...migration, checksum: "0".repeat(64) } : migration,
  );
  await t.rejects(migrate(db.pool, testLog, { core: edited }), /000001_task_runtime\.sql differs from the applied .*forward-only/);
});

t.test("a database newer than this code is refused", async (t) => {
  const db = await createTestDatabase(t);
  await t.rejects(migrate(db.pool, testLog, { core: [] }), /the database has migration \d+ but this version of pgconverge knows only 0; upgrade pgconverge/);
});

t.test("every table, view and column of the schema has a comment", async (t) => {
  const db = await createTestDatabase(t);
  const missing = await db.query<{ what: string }>(`
    select c.relname as what from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'v') and obj_description(c.oid, 'pg_class') is null
  `);
  t.same(missing, [], "tables and views without COMMENT ON");
  const bareColumns = await db.query<{ what: string }>(`
    select c.relname || '.' || a.attname as what
    from pg_class c join pg_namespace n on n.oid = c.relnamespace join pg_attribute a on a.attrelid = c.oid
    where n.nspname = 'public' and c.relkind in ('r', 'v') and a.attnum > 0 and not a.attisdropped
      and col_description(c.oid, a.attnum) is null
    order by 1
  `);
  t.same(bareColumns, [], "columns without COMMENT ON");
  const [views] = await db.query<{ count: string }>(`
    select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind = 'v'
  `);
  t.ok(Number(views!.count) >= 6, "the inspection views are covered by these checks");
  const bareFunctions = await db.query<{ what: string }>(`
    select p.proname as what from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public' and obj_description(p.oid, 'pg_proc') is null
  `);
  t.same(bareFunctions, [], "functions without COMMENT ON");
});
