import { randomBytes } from "node:crypto";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import pg from "pg";
import t from "tap";
import { migrate } from "../../src/db/migrate.ts";
import { createQueuePool } from "../../src/db/pools.ts";
import { createTestDatabase, testLog, withDatabase, type TestDatabase } from "../helpers/db.ts";

const CLI = fileURLToPath(new URL("../../bin/pgconverge.js", import.meta.url));
const READER = "pgconverge_reader";
const INSUFFICIENT_PRIVILEGE = "42501";

const VIEWS = ["job_list", "job_counts", "dead_letter_list", "outbox_lag", "outbox_dead_changes", "worker_status", "reconcile_latest"];
const TABLES = ["documents", "chunks", "outbox", "dead_letters", "workers", "job_ledger", "job_failures", "reconcile_runs", "migrations", "graphile_worker.jobs", "graphile_worker._private_jobs"];

/** Writes a reader must not be able to make; each is one statement. */
const WRITES = [
  "insert into outbox (collection, point_id) values ('chunks', gen_random_uuid())",
  "update outbox set attempts = attempts + 1",
  "delete from outbox",
  "truncate outbox",
  "insert into dead_letters (job_id, revision, task, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at) values (1, 0, 'x', '{}', 'permanent', 1, 1, 'e', now(), now())",
  "update dead_letters set last_error = 'tampered'",
  "delete from dead_letters",
  "truncate dead_letters",
  "update graphile_worker._private_jobs set run_at = now()",
  "delete from graphile_worker._private_jobs",
  "truncate graphile_worker._private_jobs",
  "select graphile_worker.add_job('effect', '{}')",
  "delete from workers",
  "delete from documents",
  "create table reader_was_here (id int)",
  "create view reader_view as select 1",
  `select pgconverge_setup_reader('${READER}')`,
];

/** One job, one dead letter, one outbox change, one worker: something to read and to protect. */
async function seed(db: TestDatabase): Promise<void> {
  await db.query(`
    select graphile_worker.add_job('effect', '{"n": 1}');
    insert into dead_letters (job_id, revision, task, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
      values (1000, 0, 'effect', '{"n": 2}', 'permanent', 1, 25, 'document is not valid UTF-8', now(), now());
    insert into outbox (collection, point_id) values ('chunks', gen_random_uuid());
    insert into workers (id, hostname, pid, concurrency) values ('host-1-aa', 'host', 1, 4);
  `);
}

async function snapshot(db: TestDatabase): Promise<string> {
  const [row] = await db.query<{ s: string }>(`
    select json_build_object(
      'jobs', (select json_agg(j order by id) from graphile_worker._private_jobs j),
      'dead', (select json_agg(d order by id) from dead_letters d),
      'outbox', (select json_agg(o order by id) from outbox o),
      'workers', (select json_agg(w order by id) from workers w),
      'tables', (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public')
    )::text as s
  `);
  return row!.s;
}

t.test(`${READER} selects from every view and table and cannot modify anything`, async (t) => {
  const db = await createTestDatabase(t);
  await seed(db);
  const before = await snapshot(db);
  const client = await db.pool.connect();
  t.teardown(() => client.release(true));
  await client.query(`set role ${READER}`);
  t.equal((await client.query("select current_user as u")).rows[0].u, READER);

  for (const view of VIEWS) await client.query(`select * from ${view}`);
  for (const table of TABLES) await client.query(`select * from ${table}`);
  t.pass("every view and table is readable");
  const counts = (await client.query("select * from job_counts")).rows;
  t.same(counts.map((row) => [row.task, Number(row.pending), Number(row.dead)]), [["effect", 1, 1]], "and the views show the data");

  for (const statement of WRITES) {
    const error = await client.query(statement).then(
      () => null,
      (error: pg.DatabaseError) => error,
    );
    t.equal(error?.code, INSUFFICIENT_PRIVILEGE, `refused: ${statement.slice(0, 60)}`);
  }
  await client.query("reset role");
  t.equal(await snapshot(db), before, "nothing changed");
});

t.test("a login role granted the reader role runs status and dlq list, but not dlq retry", async (t) => {
  const login = `pgc_test_alice_${randomBytes(4).toString("hex")}`;
  const password = randomBytes(12).toString("hex");
  let serverUrl = "";
  // Registered before the database, so it runs after the database is dropped (teardowns run last-in first-out).
  t.teardown(async () => {
    const cleanup = new pg.Client({ connectionString: serverUrl });
    await cleanup.connect();
    await cleanup.query(`drop role if exists ${login}`);
    await cleanup.end();
  });
  const db = await createTestDatabase(t);
  serverUrl = withDatabase(db.url, "postgres");
  await seed(db);
  await db.query(`create role ${login} login password '${password}' in role ${READER}`);
  const url = new URL(db.url);
  url.username = login;
  url.password = password;
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, DATABASE_URL: url.toString(), LOG_LEVEL: "warn" }, encoding: "utf8", timeout: 30_000 });

  const status = cli("status", "--json");
  t.equal(status.status, 0, status.stderr);
  const report = JSON.parse(status.stdout);
  t.equal(report.jobs.pending, 1);
  t.equal(report.jobs.dead, 1);
  const list = cli("dlq", "list", "--json");
  t.equal(list.status, 0, list.stderr);
  t.equal(JSON.parse(list.stdout).length, 1);

  const before = await snapshot(db);
  const retry = cli("dlq", "retry", "--all");
  t.equal(retry.status, 1, "a runtime failure");
  t.match(retry.stderr, /^pgconverge: .*permission denied/);
  t.equal(retry.stderr.trim().split("\n").length, 1, "one line");
  t.equal(await snapshot(db), before, "nothing changed");
});

t.test("a migrating user without CREATEROLE still migrates, and the reader is set up once an administrator creates it", async (t) => {
  const suffix = randomBytes(4).toString("hex");
  const owner = `pgc_test_owner_${suffix}`;
  const reader = `pgc_test_reader_${suffix}`;
  const password = randomBytes(12).toString("hex");
  const database = `pgc_test_owned_${suffix}`;
  // A throw-away database owned by a user that may create schemas and tables but not roles
  // (the test database is only a place to connect to as an administrator).
  const serverUrl = (await createTestDatabase(t, { migrate: false })).url;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`create role ${owner} login password '${password}' nocreaterole`);
  await admin.query(`create database ${database} owner ${owner}`);
  t.teardown(async () => {
    await admin.query(`drop database if exists ${database} with (force)`);
    await admin.query(`drop role if exists ${reader}`);
    await admin.query(`drop role if exists ${owner}`);
    await admin.end();
  });

  const ownerUrl = new URL(withDatabase(serverUrl, database));
  ownerUrl.username = owner;
  ownerUrl.password = password;
  const pool = createQueuePool(ownerUrl.toString(), 2);
  t.teardown(() => pool.end());
  const applied = await migrate(pool, testLog);
  t.ok(applied.includes("000003_inspection_views.sql"), "the migration applied");

  const client = await pool.connect();
  t.teardown(() => client.release(true));
  const notices: string[] = [];
  client.on("notice", (notice) => notices.push(notice.message ?? ""));
  const refused = await client.query<{ ok: boolean }>(`select pgconverge_setup_reader('${reader}') as ok`);
  t.equal(refused.rows[0]!.ok, false, "no role without CREATEROLE");
  t.match(notices.join("\n"), new RegExp(`role ${reader} not created: ${owner} lacks CREATEROLE`));

  // What the notice tells an administrator to do.
  await admin.query(`create role ${reader} nologin`);
  t.equal((await client.query<{ ok: boolean }>(`select pgconverge_setup_reader('${reader}') as ok`)).rows[0]!.ok, true);
  const ownedAdmin = new pg.Client({ connectionString: withDatabase(serverUrl, database) });
  await ownedAdmin.connect();
  t.teardown(() => ownedAdmin.end());
  await ownedAdmin.query(`set role ${reader}`);
  await ownedAdmin.query("select * from job_counts");
  await ownedAdmin.query("select * from dead_letter_list");
  await t.rejects(ownedAdmin.query("delete from dead_letters"), { code: INSUFFICIENT_PRIVILEGE });
  await t.rejects(ownedAdmin.query("delete from graphile_worker._private_jobs"), { code: INSUFFICIENT_PRIVILEGE });
});
