// `pgconverge migrate` applies pgconverge's migrations and then the application's set: the one
// PGCONVERGE_APP_MIGRATIONS names, or else pipeline/sql of the working directory; and it
// upgrades a database migrated by 0.1.
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { runCli } from "../helpers/cli.ts";
import { readMigrations } from "../../src/db/migrate.ts";
import { createTestDatabase, PIPELINE_MIGRATIONS, type TestDatabase } from "../helpers/db.ts";
import { migrateAs01 } from "../helpers/legacy.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

async function sets(db: TestDatabase): Promise<string[]> {
  return (await db.query<{ set: string }>("select distinct set from migrations order by set")).map((row) => row.set);
}

t.test("in a directory with pipeline/sql, migrate applies the pipeline's set; elsewhere only pgconverge's", async (t) => {
  const here = await createTestDatabase(t, { migrate: false });
  const inRepo = await runCli(["migrate"], { env: { DATABASE_URL: here.url }, cwd: ROOT });
  t.equal(inRepo.code, 0, inRepo.stderr);
  t.match(inRepo.stdout, /^applied 000001_task_runtime\.sql, .*pipeline\/000001_documents_chunks\.sql\n$/);
  t.same(await sets(here), ["pgconverge", "pipeline"]);

  const elsewhere = await createTestDatabase(t, { migrate: false });
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-cwd-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const outside = await runCli(["migrate"], { env: { DATABASE_URL: elsewhere.url }, cwd: dir });
  t.equal(outside.code, 0, outside.stderr);
  t.same(await sets(elsewhere), ["pgconverge"]);
  const status = await runCli(["status", "--json"], { env: { DATABASE_URL: here.url, QDRANT_URL: "http://127.0.0.1:9" }, cwd: dir });
  t.equal(status.code, 0, `a set recorded but not configured is not "unknown": ${status.stderr}`);

  cpSync(PIPELINE_MIGRATIONS.directory, join(dir, "db"), { recursive: true });
  const named = await runCli(["migrate"], { env: { DATABASE_URL: elsewhere.url, PGCONVERGE_APP_MIGRATIONS: "shop=db" }, cwd: dir });
  t.equal(named.code, 0, named.stderr);
  t.equal(named.stdout, "applied shop/000001_documents_chunks.sql\n");
  t.same(await sets(elsewhere), ["pgconverge", "shop"]);
});

t.test("a bad PGCONVERGE_APP_MIGRATIONS is one line, exit 2", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  for (const value of ["Shop=db", "pgconverge=db", "a=b=c"]) {
    const result = await runCli(["migrate"], { env: { DATABASE_URL: db.url, PGCONVERGE_APP_MIGRATIONS: value } });
    t.equal(result.code, 2, value);
    t.match(result.stderr, /^pgconverge: .*PGCONVERGE_APP_MIGRATIONS[^\n]*\n$/, result.stderr);
  }
});

t.test("migrate upgrades a database migrated by 0.1, and commands refuse it until then", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  await migrateAs01(db.pool, 6);
  const before = await runCli(["status"], { env: { DATABASE_URL: db.url }, cwd: ROOT });
  t.equal(before.code, 2);
  t.match(before.stderr, /^pgconverge: .*the schema is pgconverge 0\.1's \(run pgconverge migrate to upgrade it\)\n$/);
  const migrated = await runCli(["migrate"], { env: { DATABASE_URL: db.url }, cwd: ROOT });
  t.equal(migrated.code, 0, migrated.stderr);
  // 0.1's last file, then the core migrations that came after the 0.2.0 baseline (000001-000003).
  const later = readMigrations().slice(3).map((m) => m.name);
  t.equal(migrated.stdout, `applied ${["pgconverge-0.1/000007_sync_owner_point_ids.sql", ...later].join(", ")}\n`);
  t.same(await sets(db), ["pgconverge", "pgconverge-0.1", "pipeline"]);
  const after = await runCli(["status", "--json"], { env: { DATABASE_URL: db.url }, cwd: ROOT });
  t.equal(after.code, 0, after.stderr);
});
