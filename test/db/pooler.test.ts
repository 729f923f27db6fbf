// Behind a transaction-mode PgBouncer: the misconfiguration is caught at start, migrations take
// turns without a session, and the apply timeout holds without a session setting.
import pino from "pino";
import t from "tap";
import { keepsSessions } from "../../src/db/connections.ts";
import { readMigrations } from "../../src/db/migrate.ts";
import { createAppPool, createLivenessPool, createQueuePool } from "../../src/db/pools.ts";
import { runCli } from "../helpers/cli.ts";
import { runWorker } from "../../src/api/runWorker.ts";
import { createTestDatabase, PIPELINE_MIGRATIONS, testLog, waitFor } from "../helpers/db.ts";
import { addJobs, createEffectsTable, queuedJobs } from "../helpers/fixtures.ts";
import { SKIP_WITHOUT_PGBOUNCER, startPgBouncer } from "../helpers/pgbouncer.ts";
import { startWorker } from "../helpers/worker.ts";

t.test("the session probe tells a direct connection from a transaction-mode pooler", { skip: SKIP_WITHOUT_PGBOUNCER }, async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const bouncer = await startPgBouncer(t, db.url, { poolSize: 5 });
  t.equal(await keepsSessions(db.url), true, "a direct connection keeps sessions");
  t.equal(await keepsSessions(bouncer.urlFor(db.url)), false, "PgBouncer in transaction mode does not");
});

t.test("commands in front of a transaction-mode pooler without DATABASE_POOL_MODE exit 2 with one line saying what to set", { skip: SKIP_WITHOUT_PGBOUNCER }, async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const pooled = (await startPgBouncer(t, db.url, { poolSize: 5 })).urlFor(db.url);
  for (const command of [["migrate"], ["worker"]]) {
    const result = await runCli(command, { env: { DATABASE_URL: pooled, METRICS_PORT: "0" } });
    t.equal(result.code, 2, `${command[0]}: exit code 2`);
    t.match(result.stderr.trim(), /^[^\n]*DATABASE_URL goes through a transaction-mode pooler[^\n]*set DATABASE_POOL_MODE=transaction, and DATABASE_DIRECT_URL[^\n]*$/, `${command[0]}: one line`);
    t.equal((await db.query("select to_regclass('migrations') as t"))[0]!.t, null, `${command[0]}: nothing was done`);
  }
  const wrongDirect = await runCli(["migrate"], { env: { DATABASE_URL: pooled, DATABASE_POOL_MODE: "transaction", DATABASE_DIRECT_URL: pooled } });
  t.equal(wrongDirect.code, 2);
  t.match(wrongDirect.stderr.trim(), /^[^\n]*DATABASE_DIRECT_URL goes through a transaction-mode pooler too[^\n]*$/);
  const direct = await runCli(["migrate"], { env: { DATABASE_URL: db.url, DATABASE_POOL_MODE: "transaction", DATABASE_DIRECT_URL: db.url } });
  t.equal(direct.code, 0, `a direct URL in transaction mode is allowed (only slower): ${direct.stderr}`);
});

t.test("runWorker in front of a transaction-mode pooler without databasePoolMode rejects with a ConfigError naming its options", { skip: SKIP_WITHOUT_PGBOUNCER }, async (t) => {
  const db = await createTestDatabase(t);
  const pooled = (await startPgBouncer(t, db.url, { poolSize: 5 })).urlFor(db.url);
  await t.rejects(runWorker({ databaseUrl: pooled, tasks: {}, logger: testLog }), {
    name: "ConfigError",
    message: /^databaseUrl goes through a transaction-mode pooler .*set databasePoolMode=transaction, and databaseDirectUrl/,
  });
  await t.rejects(runWorker({ databaseUrl: db.url, databaseDirectUrl: db.url, tasks: {}, logger: testLog }), {
    name: "ConfigError",
    message: 'databaseDirectUrl: is used only with databasePoolMode "transaction"',
  });
});

t.test("three concurrent migrates through the pooler take turns: all succeed, each migration once, no lock left", { skip: SKIP_WITHOUT_PGBOUNCER }, async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  // Fewer server connections than the three migrators want: they also queue in the pooler.
  const pooled = (await startPgBouncer(t, db.url, { poolSize: 4 })).urlFor(db.url);
  const env = { DATABASE_URL: pooled, DATABASE_POOL_MODE: "transaction", PGCONVERGE_APP_MIGRATIONS: `pipeline=${PIPELINE_MIGRATIONS.directory}` };
  const results = await Promise.all([1, 2, 3].map(() => runCli(["migrate"], { env })));
  t.same(results.map((result) => result.code), [0, 0, 0], results.map((result) => result.stderr).join("\n"));
  const [counts] = await db.query<{ rows: string; distinct: string }>("select count(*) as rows, count(distinct (set, id)) as distinct from migrations");
  const expected = readMigrations().length + readMigrations(PIPELINE_MIGRATIONS.directory).length;
  t.same(counts, { rows: String(expected), distinct: String(expected) }, "every migration recorded once");
  t.equal(results.filter((result) => result.stdout.startsWith("applied")).length, 1, "one migrator applied them, the others found the schema up to date");
  // pg_locks is the whole server's: only this database's locks (other test files migrate meanwhile).
  const locks = await db.query("select 1 from pg_locks l join pg_database d on d.oid = l.database where l.locktype = 'advisory' and d.datname = current_database()");
  t.equal(locks.length, 0, "no advisory lock left on any server connection");
});

t.test("a stuck apply is cut by the apply statement_timeout through the pooler", { skip: SKIP_WITHOUT_PGBOUNCER }, async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const pooled = (await startPgBouncer(t, db.url, { poolSize: 6 })).urlFor(db.url);
  const queuePool = createQueuePool(pooled, 4);
  const appPool = await createAppPool(pooled, 4, { statementTimeoutMs: 60_000, poolMode: "transaction" });
  const livenessPool = await createLivenessPool(pooled, { statementTimeoutMs: 60_000, poolMode: "transaction" });
  t.teardown(async () => {
    await appPool.end();
    await livenessPool.end();
    await queuePool.end();
  });
  await startWorker(t, db, { queuePool, appPool, livenessPool, poolMode: "transaction", listenUrl: db.url, applyTimeoutMs: 300 });
  // Without the timeout the apply would sleep 3 s and commit its effect.
  await addJobs(db, "effect", [{ n: 1, applySleepMs: 3_000 }], { maxAttempts: 1 });
  const [dead] = await waitFor("the job to be dead-lettered", async () => {
    const rows = await db.query<{ last_error: string }>("select last_error from dead_letters");
    return rows.length > 0 ? rows : undefined;
  }, { timeoutMs: 20_000 });
  t.match(dead!.last_error, /statement timeout/, "cancelled by the apply's statement_timeout");
  t.equal((await db.query("select 1 from test_effects")).length, 0, "nothing of the stuck apply committed");
});

t.test("through the pooler with a direct URL, a new job starts at once (LISTEN on the direct connection), not at the next poll", { skip: SKIP_WITHOUT_PGBOUNCER }, async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const pooled = (await startPgBouncer(t, db.url, { poolSize: 6 })).urlFor(db.url);
  const queuePool = createQueuePool(pooled, 4);
  const appPool = await createAppPool(pooled, 4, { statementTimeoutMs: 60_000, poolMode: "transaction" });
  const livenessPool = await createLivenessPool(pooled, { statementTimeoutMs: 60_000, poolMode: "transaction" });
  t.teardown(async () => {
    await appPool.end();
    await livenessPool.end();
    await queuePool.end();
  });
  // The poll is ten minutes away: only a notification can start the job within the deadline.
  await startWorker(t, db, { queuePool, appPool, livenessPool, poolMode: "transaction", listenUrl: db.url, pollIntervalMs: 600_000 });
  // The first job may be found by the worker's fetch at start; once it is done and the queue is
  // empty the worker is idle, and the second can only be started by a notification.
  await addJobs(db, "effect", [{ n: 1 }]);
  await waitFor("the first job to complete", async () => (await queuedJobs(db)) === 0, { timeoutMs: 60_000 });
  await addJobs(db, "effect", [{ n: 2 }]);
  await waitFor("the second job's effect", async () => (await db.query("select 1 from test_effects where n = 2")).length > 0, { timeoutMs: 60_000 });
  t.pass("the second job ran long before the next poll");
});

t.test("graphile-worker's own LISTEN through the pooler pins no server connection and never reconnects in a loop", { skip: SKIP_WITHOUT_PGBOUNCER }, async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  // Two server connections, what a worker needs to make progress: a LISTEN that pinned one would stall it.
  const pooled = (await startPgBouncer(t, db.url, { poolSize: 2 })).urlFor(db.url);
  const queuePool = createQueuePool(pooled, 2);
  const appPool = await createAppPool(pooled, 2, { statementTimeoutMs: 60_000, poolMode: "transaction" });
  const livenessPool = await createLivenessPool(pooled, { statementTimeoutMs: 60_000, poolMode: "transaction" });
  t.teardown(async () => {
    await appPool.end();
    await livenessPool.end();
    await queuePool.end();
  });
  const lines: string[] = [];
  const log = pino({ level: "debug" }, { write: (line: string) => lines.push(line) });
  await startWorker(t, db, { queuePool, appPool, livenessPool, log, concurrency: 2, poolMode: "transaction", listenUrl: db.url });
  // Each add_job notifies jobs:insert: the server connection graphile-worker's LISTEN landed on
  // gets them while it serves other clients' transactions or sits idle in PgBouncer's pool.
  for (let n = 0; n < 20; n++) await addJobs(db, "effect", [{ n }]);
  await waitFor("every job to complete", async () => (await db.query("select 1 from test_effects")).length === 20 && (await queuedJobs(db)) === 0, { timeoutMs: 60_000 });
  t.ok(lines.some((line) => /Worker connected and looking for jobs/.test(line)), "graphile-worker's log lines are captured (it took its LISTEN client)");
  t.same(lines.filter((line) => /notify listener/.test(line)), [], "its LISTEN client was never lost and reconnected");
});
