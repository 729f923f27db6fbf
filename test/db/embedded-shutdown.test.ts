// The Quick start's worker on its embedded Postgres, stopped the way a terminal stops it: a signal to
// the whole foreground process group. Each run starts a server of its own (no DATABASE_URL).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import t from "tap";
import { runningServerUrl, startEmbeddedPostgres } from "../../src/db/embedded.ts";
import { waitFor, type TestDatabase } from "../helpers/db.ts";
import { addJobs, createEffectsTable, FIXTURE_TASKS_DIR } from "../helpers/fixtures.ts";
import { FAST_LIVENESS } from "../helpers/worker.ts";

const CLI = fileURLToPath(new URL("../../bin/pgconverge.js", import.meta.url));

/** A pg pool shaped like the test helpers' database, for the fixtures. */
function connect(url: string): TestDatabase & { end(): Promise<void> } {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on("error", () => {});
  return {
    url,
    name: "postgres",
    pool,
    appPool: undefined as never,
    query: async (text, values) => (await pool.query(text, values)).rows,
    end: () => pool.end(),
  };
}

// Mode 0700: as root the data directory is then placed where the postgres user can reach it.
const home = mkdtempSync(join(tmpdir(), "pgconverge-shutdown-"));
const pgdata = join(home, "pgdata");
t.teardown(() => {
  if (existsSync(pgdata)) rmSync(realpathSync(pgdata), { recursive: true, force: true });
  rmSync(home, { recursive: true, force: true });
});

function workerEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PGCONVERGE_DATA_DIR: home,
    PGCONVERGE_TASKS_DIR: FIXTURE_TASKS_DIR,
    METRICS_PORT: "0",
    LOG_LEVEL: "info",
    SHUTDOWN_TIMEOUT_MS: "30000",
    RECONCILE_CRON: "off",
    ...FAST_LIVENESS,
  };
  delete env.DATABASE_URL;
  return env;
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  t.test(`${signal} to the worker's process group drains the job, deregisters, then stops the embedded Postgres`, async (t) => {
    // The leader of a process group of its own, as a shell makes a foreground job.
    const child = spawn(process.execPath, [CLI, "worker"], { env: workerEnv(), detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, "SIGKILL");
    });

    const url = await waitFor("the embedded Postgres", async () => runningServerUrl(pgdata) ?? false, { timeoutMs: 60_000 });
    const db = connect(url);
    await waitFor("the worker to register", async () => {
      try {
        return (await db.query("select 1 from workers where pid = $1", [child.pid])).length > 0;
      } catch {
        return false; // not migrated yet
      }
    }, { timeoutMs: 60_000 });
    await db.query("drop table if exists test_effects");
    await createEffectsTable(db);
    await addJobs(db, "effect", [{ n: 1, prepareMs: 1_500 }]);
    await waitFor("the job to start", async () => (await db.query("select 1 from graphile_worker.jobs where locked_by is not null")).length > 0);
    await db.end();

    process.kill(-child.pid!, signal);
    t.equal(await exited, 0, output);
    t.notOk(existsSync(join(pgdata, "postmaster.pid")), "the embedded Postgres stopped with the worker");
    const errors = output.split("\n").filter((line) => /"level":(50|60)/.test(line));
    t.same(errors, [], "no error logged");

    // Look at what the worker left, on the same data directory.
    const server = await startEmbeddedPostgres({ dataDir: pgdata, persistent: true });
    const after = connect(server.url);
    t.same(await after.query("select n from test_effects"), [{ n: 1 }], "the in-flight job committed");
    t.same(await after.query("select * from workers"), [], "the worker deregistered");
    await after.end();
    await server.stop();
  });
}

t.test("a SIGKILLed worker's embedded Postgres stops by itself, and the next start can use the data directory", async (t) => {
  const child = spawn(process.execPath, [CLI, "worker"], { env: workerEnv(), detached: true, stdio: "ignore" });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  await waitFor("the embedded Postgres", async () => runningServerUrl(pgdata) !== null, { timeoutMs: 60_000 });
  process.kill(-child.pid!, "SIGKILL");
  await exited;
  await waitFor("the orphaned server to stop", async () => !existsSync(join(pgdata, "postmaster.pid")));
  const server = await startEmbeddedPostgres({ dataDir: pgdata, persistent: true });
  const db = connect(server.url);
  t.same(await db.query("select count(*)::int as n from test_effects"), [{ n: 1 }]);
  await db.end();
  await server.stop();
});
