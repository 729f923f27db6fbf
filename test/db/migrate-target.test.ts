// Where migrations run, and which commands probe the pool mode. With DATABASE_POOL_MODE=transaction
// and a DATABASE_DIRECT_URL, every migrating path (pgconverge migrate, relay and worker, runWorker,
// migrate()) migrates over the direct URL; short commands never touch it.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import t from "tap";
import { migrate } from "../../src/api/migrate.ts";
import { runWorker } from "../../src/api/runWorker.ts";
import { CLI, runCli } from "../helpers/cli.ts";
import { createTestDatabase, testLog, waitFor, type TestDatabase } from "../helpers/db.ts";
import { pipelineEnv, startServers } from "../helpers/pipeline.ts";

/** A URL on a port where nothing listens: any connection to it is refused. */
async function refusedUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return `postgres://postgres@127.0.0.1:${port}/postgres`;
}

/**
 * Records the application_name of every session that runs DDL in `db` (an event trigger, as the
 * superuser the tests connect as): the pool a migration ran on names itself there.
 */
async function recordDdlSessions(db: TestDatabase): Promise<() => Promise<string[]>> {
  await db.query(`
    create table test_ddl_sessions (application_name text not null);
    create function test_record_ddl() returns event_trigger language plpgsql as $$
      begin insert into public.test_ddl_sessions values (current_setting('application_name')); end $$;
    create event trigger test_record_ddl on ddl_command_end execute function test_record_ddl();
  `);
  return async () => (await db.query<{ application_name: string }>("select distinct application_name from test_ddl_sessions order by 1")).map((row) => row.application_name);
}

t.test("migrate() with databaseDirectUrl migrates over it, not over databaseUrl", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const applied = await migrate({ databaseUrl: await refusedUrl(), databaseDirectUrl: db.url, logger: testLog });
  t.ok(applied.length > 0, "the migrations were applied");
  t.equal((await db.query("select count(*)::int as n from migrations"))[0]!.n, applied.length);
});

t.test("runWorker in transaction mode migrates over databaseDirectUrl", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const sessions = await recordDdlSessions(db);
  const worker = await runWorker({ databaseUrl: db.url, databasePoolMode: "transaction", databaseDirectUrl: db.url, tasks: {}, logger: testLog, concurrency: 1 });
  await worker.stop();
  t.same(await sessions(), ["pgconverge-migrate"], "every migration statement ran on the direct URL's pool");
});

t.test("pgconverge migrate and relay in transaction mode migrate over DATABASE_DIRECT_URL", async (t) => {
  const servers = await startServers(t);
  for (const command of ["migrate", "relay"]) {
    const db = await createTestDatabase(t, { migrate: false });
    const sessions = await recordDdlSessions(db);
    const env = { ...process.env, LOG_LEVEL: "info", ...pipelineEnv(db, servers), DATABASE_POOL_MODE: "transaction", DATABASE_DIRECT_URL: db.url };
    const child = spawn(process.execPath, [CLI, command], { env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (data: string) => (output += data));
    child.stderr.setEncoding("utf8").on("data", (data: string) => (output += data));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    t.teardown(() => {
      if (child.exitCode === null) child.kill("SIGKILL");
    });
    // migrate exits by itself; the relay runs once migrated, until SIGTERM.
    if (command === "relay") {
      await waitFor("the relay to start", async () => output.includes("relay started") || child.exitCode !== null, { timeoutMs: 60_000 });
      child.kill("SIGTERM");
    }
    const code = await exited;
    t.equal(code, 0, `${command} exits 0`);
    if (code !== 0) t.comment(output);
    t.same(await sessions(), ["pgconverge-migrate"], `${command}: every migration statement ran on the direct URL's pool`);
  }
});

t.test("only the commands that migrate probe the pool mode: status never connects to DATABASE_DIRECT_URL", async (t) => {
  const db = await createTestDatabase(t);
  const env = { DATABASE_URL: db.url, DATABASE_POOL_MODE: "transaction", DATABASE_DIRECT_URL: await refusedUrl() };
  const status = await runCli(["status", "--json"], { env });
  t.equal(status.code, 0, `status does not probe the direct URL: ${status.stderr}`);
  const migrating = await runCli(["migrate"], { env });
  t.not(migrating.code, 0, "migrate probes it (and migrates over it), so a dead direct URL stops it");
});
