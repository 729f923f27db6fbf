// Migration sets and the upgrade from 0.1: pgconverge's own migrations and an application's are
// recorded apart; a database migrated by 0.1 (its seven files, documents and chunks among them)
// is adopted without losing data and ends with exactly a fresh 0.2 install's schema.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t, { type Test } from "tap";
import { checkMigrations, migrate, readMigrations } from "../../src/db/migrate.ts";
import { createTestDatabase, PIPELINE_MIGRATIONS, testLog, type TestDatabase } from "../helpers/db.ts";
import { LEGACY_DIR, migrateAs01, schemaOf } from "../helpers/legacy.ts";

const SHA = "a".repeat(64);

/**
 * The core migrations a 0.1 database is adopted as (0.2.0's baseline, 000001-000003); the core
 * set's later files are new to it and applied after the adoption, as on any 0.2 database.
 */
const BASELINE_CORE_FILES = 3;
const AFTER_BASELINE = readMigrations().slice(BASELINE_CORE_FILES).map((m) => m.name);

async function putData(db: TestDatabase): Promise<void> {
  await db.query(`insert into documents (id, source, content, content_sha256) values ('00000000-0000-4000-8000-000000000001', 'notes.md', 'hello world', '${SHA}')`);
  await db.query(`insert into chunks (id, document_id, chunk_index, content, content_sha256, embedding, embedding_model, embedded_at)
    values ('00000000-0000-4000-8000-0000000000c1', '00000000-0000-4000-8000-000000000001', 0, 'hello', '${SHA}', '{0.5,0.25}', 'm', now()),
           ('00000000-0000-4000-8000-0000000000c2', '00000000-0000-4000-8000-000000000001', 1, 'world', '${SHA}', null, null, null)`);
  await db.query("insert into outbox (collection, point_id) values ('chunks', '00000000-0000-4000-8000-0000000000c1')");
  await db.query(`insert into dead_letters (job_id, revision, task, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
    values (41, 0, 'embed_chunks', '{"documentId": 1}', 'permanent', 1, 25, 'bad payload', now(), now())`);
}

async function dataOf(db: TestDatabase): Promise<unknown> {
  return {
    documents: await db.query("select id, source, content from documents order by id"),
    chunks: await db.query("select id, chunk_index, content, embedding from chunks order by id"),
    outbox: await db.query("select collection, point_id, state from outbox order by id"),
    deadLetters: await db.query("select job_id, task, payload, last_error from dead_letters order by id"),
  };
}

async function upgradeFrom(t: Test, upTo: number): Promise<void> {
  const fresh = await createTestDatabase(t);
  const old = await createTestDatabase(t, { migrate: false });
  await migrateAs01(old.pool, upTo);
  if (upTo >= 2) await putData(old);
  const before = upTo >= 2 ? await dataOf(old) : null;
  const applied = await migrate(old.pool, testLog, { app: PIPELINE_MIGRATIONS });
  t.same(
    applied,
    [...readMigrations(LEGACY_DIR).slice(upTo).map((m) => `pgconverge-0.1/${m.name}`), ...AFTER_BASELINE],
    "0.1's missing files applied, then the core migrations after the baseline, nothing else",
  );
  if (before) t.same(await dataOf(old), before, "data kept");
  t.same(await schemaOf(old.pool), await schemaOf(fresh.pool), "the same schema as a fresh install");
  t.same(await checkMigrations(old.pool, { app: PIPELINE_MIGRATIONS }), { ok: true }, "ready");
  t.same(await migrate(old.pool, testLog, { app: PIPELINE_MIGRATIONS }), [], "a later run applies nothing");
  const history = await old.query<{ set: string; name: string }>("select set, name from migrations where set = 'pgconverge-0.1' order by id");
  t.same(history.map((row) => row.name), readMigrations(LEGACY_DIR).map((m) => m.name), "0.1's records kept as history");
}

t.test("a database migrated by all of 0.1 is adopted: data kept, schema equal to a fresh install's", (t) => upgradeFrom(t, 7));
t.test("a database stopped at 0.1's 000004 is adopted the same way", (t) => upgradeFrom(t, 4));

t.test("several processes upgrading one 0.1 database at once take turns: one adopts it", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  await migrateAs01(db.pool, 5);
  const results = await Promise.all(Array.from({ length: 4 }, () => migrate(db.pool, testLog, { app: PIPELINE_MIGRATIONS })));
  t.same(results.flat().sort(), [...AFTER_BASELINE, "pgconverge-0.1/000006_faster_dead_worker_default.sql", "pgconverge-0.1/000007_sync_owner_point_ids.sql"].sort());
  t.same(await checkMigrations(db.pool, { app: PIPELINE_MIGRATIONS }), { ok: true });
});

t.test("the adopted baselines are the shipped files", async (t) => {
  const baseline = JSON.parse(readFileSync(join(LEGACY_DIR, "adopt", "baseline.json"), "utf8")) as { sets: Record<string, unknown> };
  const of = (files: { id: number; name: string; checksum: string }[]) => files.map(({ id, name, checksum }) => ({ id, name, checksum }));
  t.same(baseline.sets, {
    pgconverge: of(readMigrations().slice(0, BASELINE_CORE_FILES)),
    pipeline: of(readMigrations(PIPELINE_MIGRATIONS.directory).slice(0, 1)),
  });
});

t.test("a migrations table that is not 0.1's is refused in one line", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  await migrateAs01(db.pool, 3);
  await db.query("update migrations set checksum = $1 where id = 2", ["0".repeat(64)]);
  const error = await migrate(db.pool, testLog).then(() => null, (e: Error) => e);
  t.match(error?.message, /^the migrations table records 000002_documents_chunks_outbox\.sql \(000000000000…\), which is not pgconverge 0\.1's; this database cannot be upgraded automatically$/);
  t.same(await db.query("select count(*)::int as n from migrations"), [{ n: 3 }], "nothing changed");
  t.same(await checkMigrations(db.pool), { ok: false, reason: "the schema is pgconverge 0.1's (run pgconverge migrate to upgrade it)" });
});

t.test("a core-only install has no documents or chunks; the pipeline's set adds them", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const tables = async () => (await db.query<{ t: string | null }>("select to_regclass('documents')::text as t union all select to_regclass('chunks')::text")).map((row) => row.t);
  t.same(await tables(), [null, null]);
  t.same(await checkMigrations(db.pool), { ok: true }, "ready without an application set");
  t.same(await checkMigrations(db.pool, { app: PIPELINE_MIGRATIONS }), { ok: false, reason: "migrations pending: pipeline/000001_documents_chunks.sql (run pgconverge migrate)" });
  t.same(await migrate(db.pool, testLog, { app: PIPELINE_MIGRATIONS }), ["pipeline/000001_documents_chunks.sql"]);
  t.same(await tables(), ["documents", "chunks"]);
  t.same(await checkMigrations(db.pool), { ok: true }, "an application's set is not unknown to a check without it");
  const sets = await db.query<{ set: string; id: number }>("select set, id from migrations order by set, id");
  t.same(sets.map((row) => `${row.set}/${row.id}`), [...readMigrations().map((m) => `pgconverge/${m.id}`), "pipeline/1"], "numbered from 1 in each set");
});

t.test("an edited applied file of the application's set is refused", async (t) => {
  const db = await createTestDatabase(t);
  const dir = mkdtempSync(join(tmpdir(), "pgconverge-app-sql-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(PIPELINE_MIGRATIONS.directory, dir, { recursive: true });
  writeFileSync(join(dir, "000001_documents_chunks.sql"), `${readFileSync(join(dir, "000001_documents_chunks.sql"), "utf8")}\n-- edited\n`);
  const app = { name: "pipeline", directory: dir };
  await t.rejects(migrate(db.pool, testLog, { app }), /^pipeline\/000001_documents_chunks\.sql differs from the applied pipeline\/000001_documents_chunks\.sql; migrations are forward-only/);
  t.same(await checkMigrations(db.pool, { app }), { ok: false, reason: "applied migration differs from its file: pipeline/000001_documents_chunks.sql" });
});

t.test("an application's set name is checked, in one line", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  for (const name of ["", "Pipeline", "pgconverge", "pgconverge-0.1", "a b", "x".repeat(64)]) {
    await t.rejects(migrate(db.pool, testLog, { app: { name, directory: PIPELINE_MIGRATIONS.directory } }), /^migration set name .* is not valid: [^\n]*$/, JSON.stringify(name));
  }
  await t.rejects(migrate(db.pool, testLog, { app: { name: "app", directory: join(tmpdir(), "no-such-dir-pgconverge") } }), /^cannot read the migrations directory [^\n]*$/);
});
