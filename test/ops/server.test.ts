// /healthz, /readyz and the metrics server's lifecycle: ready only with a reachable database and current migrations.
import { createServer } from "node:net";
import pg from "pg";
import t from "tap";
import { ConfigError } from "../../src/config.ts";
import { OpsService } from "../../src/ops/opsService.ts";
import { migrate, type MigrationOptions } from "../../src/db/migrate.ts";
import { createTestDatabase, PIPELINE_MIGRATIONS, testLog, withDatabase } from "../helpers/db.ts";
import { freePort, get } from "../helpers/metrics.ts";
import { spawnWorker } from "../helpers/worker.ts";

async function opsFor(t: { teardown(fn: () => unknown): void }, databaseUrl: string, port = 0, migrations?: MigrationOptions): Promise<OpsService> {
  const ops = new OpsService({ host: "127.0.0.1", port, log: testLog, databaseUrl, collection: "chunks", deadAfterMs: 30_000, probeTimeoutMs: 2_000, migrations });
  t.teardown(() => ops.stop());
  await ops.start();
  return ops;
}

/** GET /readyz; throws unless the body is exactly one line of JSON. */
async function readyz(ops: OpsService): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await get(`${ops.url}/readyz`);
  if (!/^\{[^\n]*\}\n$/.test(response.body)) throw new Error(`/readyz body is not one line of JSON: ${JSON.stringify(response.body)}`);
  return { status: response.status, body: JSON.parse(response.body) as Record<string, unknown> };
}

t.test("/healthz answers 200 while the process runs, whatever the database", async (t) => {
  const ops = await opsFor(t, `postgres://postgres@127.0.0.1:${await freePort()}/nothing`);
  t.same(await get(`${ops.url}/healthz`), { status: 200, type: "application/json", body: '{"status":"ok"}\n' });
  t.equal((await get(`${ops.url}/nope`)).status, 404);
  t.equal((await fetch(`${ops.url}/healthz`, { method: "POST" })).status, 405);
});

t.test("/readyz is 200 with a migrated database and 503 with a reason once the database is dropped", async (t) => {
  const db = await createTestDatabase(t);
  const ops = await opsFor(t, db.url);
  t.same(await readyz(ops), { status: 200, body: { status: "ready" } });
  const admin = new pg.Client({ connectionString: withDatabase(db.url, "postgres") });
  await admin.connect();
  await admin.query(`drop database ${db.name} with (force)`);
  await admin.end();
  const down = await readyz(ops);
  t.equal(down.status, 503);
  t.match(down.body, { status: "unavailable", reason: /^database unreachable: .*does not exist/ });
});

t.test("/readyz is 503 when nothing listens at the database's address", async (t) => {
  const ops = await opsFor(t, `postgres://postgres@127.0.0.1:${await freePort()}/nothing`);
  const down = await readyz(ops);
  t.equal(down.status, 503);
  t.match(down.body, { status: "unavailable", reason: /^database unreachable: .*ECONNREFUSED/ });
});

t.test("/readyz is 503 while a migration is pending, and 200 once it is applied", async (t) => {
  const db = await createTestDatabase(t);
  const ops = await opsFor(t, db.url);
  const [latest] = await db.query<{ id: number; name: string; checksum: string }>(
    "delete from migrations where set = 'pgconverge' and id = (select max(id) from migrations where set = 'pgconverge') returning id, name, checksum",
  );
  const pending = await readyz(ops);
  t.equal(pending.status, 503);
  t.match(pending.body, { status: "unavailable", reason: `migrations pending: ${latest!.name} (run pgconverge migrate)` });
  await db.query("insert into migrations (set, id, name, checksum) values ('pgconverge', $1, $2, $3)", [latest!.id, latest!.name, latest!.checksum]);
  t.same(await readyz(ops), { status: 200, body: { status: "ready" } });
  await db.query("update migrations set checksum = repeat('0', 64) where set = 'pgconverge' and id = 1");
  t.match(await readyz(ops), { status: 503, body: { reason: /^applied migration differs from its file: 000001_/ } });
});

t.test("/readyz checks the application's migrations when it has a set, and does not call them unknown when it has none", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const withApp = await opsFor(t, db.url, 0, { app: PIPELINE_MIGRATIONS });
  t.same(await readyz(withApp), { status: 503, body: { status: "unavailable", reason: "migrations pending: pipeline/000001_documents_chunks.sql (run pgconverge migrate)" } });
  await migrate(db.pool, testLog, { app: PIPELINE_MIGRATIONS });
  t.same(await readyz(withApp), { status: 200, body: { status: "ready" } });
  const withoutApp = await opsFor(t, db.url);
  t.same(await readyz(withoutApp), { status: 200, body: { status: "ready" } }, "the pipeline's set recorded, none configured");
});

t.test("/readyz is 503 on a database that was never migrated", async (t) => {
  const db = await createTestDatabase(t, { migrate: false });
  const ops = await opsFor(t, db.url);
  t.same(await readyz(ops), { status: 503, body: { status: "unavailable", reason: "migrations not applied (run pgconverge migrate)" } });
});

t.test("a metrics port in use fails start() with a ConfigError naming METRICS_PORT; stop() is idempotent", async (t) => {
  const db = await createTestDatabase(t);
  const first = await opsFor(t, db.url);
  const second = new OpsService({ host: "127.0.0.1", port: first.server.port, log: testLog, databaseUrl: db.url, collection: "chunks", deadAfterMs: 30_000 });
  t.teardown(() => second.stop());
  const error = await second.start().catch((e: unknown) => e);
  t.type(error, ConfigError);
  t.match((error as Error).message, new RegExp(`^METRICS_PORT: 127\\.0\\.0\\.1:${first.server.port} is already in use`));
  await first.stop();
  await first.stop();
  await t.rejects(get(`${first.url}/healthz`), "stopped");
});

t.test("`pgconverge worker` with its metrics port taken exits 2 with one line, before claiming any job", async (t) => {
  const db = await createTestDatabase(t);
  const squatter = createServer();
  await new Promise<void>((resolve) => squatter.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise((resolve) => squatter.close(resolve)));
  const port = (squatter.address() as { port: number }).port;
  const worker = spawnWorker(t, db, { METRICS_PORT: String(port), LOG_LEVEL: "error" });
  const exit = await worker.exited;
  t.equal(exit.code, 2, worker.output());
  t.match(worker.output(), new RegExp(`^pgconverge: METRICS_PORT: 127\\.0\\.0\\.1:${port} is already in use; .*METRICS_PORT=0.*\\n$`, "m"));
  t.notMatch(worker.output(), /\n\s+at /, "no stack trace");
  t.same(await db.query("select * from workers"), [], "the worker never registered");
});
