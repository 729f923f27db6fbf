// The embedded Postgres's own password, and where it runs as root. Each test starts servers of its own.
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import t, { type Test } from "tap";
import { PASSWORD_FILE, startEmbeddedPostgres, type EmbeddedPostgresServer } from "../../src/db/embedded.ts";

/** A data directory in a fresh temporary directory (mode 0700), removed with what it points to. */
function dataDirectory(t: Test): string {
  const home = mkdtempSync(join(tmpdir(), "pgconverge-embedded-"));
  const dataDir = join(home, "pgdata");
  t.teardown(() => {
    if (existsSync(dataDir)) rmSync(realpathSync(dataDir), { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });
  return dataDir;
}

async function query(url: string, text: string): Promise<unknown[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

function withPassword(url: string, password: string): string {
  const parsed = new URL(url);
  parsed.password = password;
  return parsed.toString();
}

async function started(t: Test, dataDir: string): Promise<EmbeddedPostgresServer> {
  const server = await startEmbeddedPostgres({ dataDir, persistent: true });
  t.teardown(() => server.stop());
  return server;
}

t.test("each data directory gets a password of its own, kept in it and reused on restart; the old fixed one is refused", async (t) => {
  const first = dataDirectory(t);
  const second = dataDirectory(t);
  const a = await started(t, first);
  const b = await started(t, second);
  const passwordA = decodeURIComponent(new URL(a.url).password);
  t.not(passwordA, decodeURIComponent(new URL(b.url).password), "two data directories, two passwords");
  t.equal(readFileSync(join(first, PASSWORD_FILE), "utf8").trim(), passwordA, "kept in the data directory");
  t.equal(statSync(join(first, PASSWORD_FILE)).mode & 0o777, 0o600, "readable by its owner only");
  await a.stop();
  const again = await started(t, first);
  t.equal(decodeURIComponent(new URL(again.url).password), passwordA, "a restart reuses it");
  t.same(await query(again.url, "select 1 as one"), [{ one: 1 }]);
  await t.rejects(query(withPassword(again.url, "pgconverge"), "select 1"), { code: "28P01" }, "the old fixed password is refused");
  await t.rejects(query(withPassword(b.url, passwordA), "select 1"), { code: "28P01" }, "another directory's password is refused");
});

t.test("a data directory made with the old fixed password gets its own at the next start", async (t) => {
  const dataDir = dataDirectory(t);
  const server = await startEmbeddedPostgres({ dataDir, persistent: true });
  // What the previous versions left: the fixed password and no password file.
  await query(server.url, "alter role postgres password 'pgconverge'");
  await server.stop();
  unlinkSync(join(dataDir, PASSWORD_FILE));
  const upgraded = await started(t, dataDir);
  const password = readFileSync(join(dataDir, PASSWORD_FILE), "utf8").trim();
  t.not(password, "pgconverge");
  t.equal(decodeURIComponent(new URL(upgraded.url).password), password);
  t.same(await query(upgraded.url, "select 1 as one"), [{ one: 1 }], "the data directory still works");
  await t.rejects(query(withPassword(upgraded.url, "pgconverge"), "select 1"), { code: "28P01" }, "the old password no longer works");
});

t.test("as root, a data directory under a directory only root may enter is placed where the server's user can reach it", { skip: process.getuid?.() === 0 ? false : "needs root: only root runs the server as another user" }, async (t) => {
  const dataDir = dataDirectory(t);
  const home = join(dataDir, "..");
  t.equal(statSync(home).mode & 0o777, 0o700);
  const server = await started(t, dataDir);
  t.same(await query(server.url, "select 1 as one"), [{ one: 1 }]);
  t.ok(lstatSync(dataDir).isSymbolicLink(), "the requested path leads to the data directory");
  t.equal(realpathSync(dataDir), server.dataDir);
  t.equal(statSync(home).mode & 0o777, 0o700, "the enclosing directory was not opened to anyone");
});

t.test("a server that cannot start ends the command with one line that says why, exit 1", async (t) => {
  const dataDir = dataDirectory(t);
  chmodSync(join(dataDir, ".."), 0o755);
  mkdirSync(dataDir, { mode: 0o700 });
  // A data directory that is not a whole cluster.
  writeFileSync(join(dataDir, "PG_VERSION"), "17\n");
  writeFileSync(join(dataDir, PASSWORD_FILE), "secret\n", { mode: 0o600 });
  const env: NodeJS.ProcessEnv = { ...process.env, PGCONVERGE_DATA_DIR: join(dataDir, "..") };
  delete env.DATABASE_URL;
  const cli = fileURLToPath(new URL("../../bin/pgconverge.js", import.meta.url));
  const run = spawnSync(process.execPath, [cli, "migrate"], { env, encoding: "utf8" });
  t.equal(run.status, 1, run.stderr);
  const lines = run.stderr.trim().split("\n");
  t.equal(lines.length, 1, run.stderr);
  t.match(lines[0], /^pgconverge: EmbeddedPostgresError: the embedded Postgres in .* did not start: postgres: could not access the server configuration file/);
});
