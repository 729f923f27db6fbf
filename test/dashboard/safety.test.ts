// The dashboard mounted through the public API, without a browser: it needs credentials or an
// explicit allowAnonymous, honours the pool mode, runs reconciles in the background (one per
// sync, with the configured read consistency), keeps error details in the log and shows only
// the notices it made itself.
import { Writable } from "node:stream";
import { pino } from "pino";
import t from "tap";
import { createDashboard, type Dashboard } from "../../src/api/dashboard.ts";
import { ConfigError } from "../../src/configFields.ts";
import { createQdrantClient, ensureCollection } from "../../src/outbox/qdrant.ts";
import { CHUNK_SYNC, COLLECTION, DIMENSIONS } from "../helpers/chunks.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { SKIP_WITHOUT_PGBOUNCER, startPgBouncer } from "../helpers/pgbouncer.ts";
import { FakeQdrant } from "../servers/qdrant.ts";

const TOKEN = "a-long-dashboard-token";
const ORIGIN = "http://127.0.0.1";

function get(dashboard: Dashboard, path: string): Promise<Response> {
  return Promise.resolve(dashboard.fetch(new Request(`${ORIGIN}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } })));
}

function post(dashboard: Dashboard, path: string, form: Record<string, string>): Promise<Response> {
  return Promise.resolve(
    dashboard.fetch(
      new Request(`${ORIGIN}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, origin: ORIGIN, "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(form).toString(),
      }),
    ),
  );
}

/** A logger whose lines the test reads. */
function capturedLog() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { logger: pino({ level: "info" }, stream), lines };
}

t.test("mounted without credentials it refuses to start unless allowAnonymous is given", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  await t.rejects(createDashboard({ pool: db.pool }), new ConfigError("createDashboard: without auth (a password or a token) anyone who reaches the pages reads payloads and errors; give auth, or allowAnonymous: true to serve them read-only to anyone"));
  await t.rejects(createDashboard({ pool: db.pool, auth: { user: "ops" } }), ConfigError, "a user name alone is no credential");
  const anonymous = await createDashboard({ pool: db.pool, allowAnonymous: true });
  t.teardown(() => anonymous.close());
  t.equal((await anonymous.fetch(new Request(`${ORIGIN}/`))).status, 200, "read-only pages when asked for");
  await t.rejects(createDashboard({ pool: db.pool, allowAnonymous: true, databasePoolMode: "pooled" as never }), ConfigError);
});

t.test("behind a transaction-mode pooler it works with databasePoolMode: transaction", { skip: SKIP_WITHOUT_PGBOUNCER }, async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const pooled = (await startPgBouncer(t, db.url, { poolSize: 3 })).urlFor(db.url);
  const dashboard = await createDashboard({ databaseUrl: pooled, databasePoolMode: "transaction", auth: { token: TOKEN }, logger: capturedLog().logger });
  t.teardown(() => dashboard.close());
  for (const path of ["/", "/jobs", "/dead-letters", "/outbox", "/syncs", "/audit"]) {
    t.equal((await get(dashboard, path)).status, 200, path);
  }
});

t.test("a failed request shows an error id, and the detail goes to the log only", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const { logger, lines } = capturedLog();
  const dashboard = await createDashboard({ pool: db.pool, auth: { token: TOKEN }, logger });
  t.teardown(() => dashboard.close());
  await db.query("drop view job_history_list cascade");
  const response = await get(dashboard, "/jobs");
  t.equal(response.status, 500);
  const body = await response.text();
  t.notMatch(body, /job_history_list|does not exist/, "no database detail reaches the browser");
  const id = /error ([0-9a-f]{8})/.exec(body)?.[1];
  t.ok(id, body);
  const line = lines.find((each) => each.errorId === id);
  t.match(String(line?.error), /job_history_list/, "the log has the detail under the id");
});

t.test("a notice is one the dashboard made: arbitrary text in the link is not shown", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const dashboard = await createDashboard({ pool: db.pool, auth: { token: TOKEN }, syncs: [CHUNK_SYNC], logger: capturedLog().logger });
  t.teardown(() => dashboard.close());
  const spoof = "Your session expired: sign in again at evil.example";
  for (const query of [`notice=${encodeURIComponent(spoof)}`, `notice=retried&n=${encodeURIComponent(spoof)}`, `notice=reconcile-busy&collection=${encodeURIComponent(spoof)}`]) {
    // The page's own URL is in its live part's hx-get attribute (escaped); nowhere else.
    const body = (await (await get(dashboard, `/dead-letters?${query}`)).text()).replace(/ hx-get="[^"]*"/, "");
    t.notMatch(body, /evil\.example/, query);
    t.notMatch(body, /id="notice"/, `${query}: no notice at all`);
  }
  t.match(await (await get(dashboard, "/dead-letters?notice=retried&n=3")).text(), /<p class="notice" id="notice">3 dead letter\(s\) re-enqueued<\/p>/);
  t.match(await (await get(dashboard, `/syncs?notice=reconcile-busy&collection=${COLLECTION}`)).text(), /a reconcile of chunks started here is still running/);
});

t.test("a reconcile runs in the background, one at a time per sync, with the configured read consistency", async (t) => {
  const db = await createTestDatabase(t);
  const fake = new FakeQdrant();
  await fake.start();
  t.teardown(() => fake.stop());
  await ensureCollection(await createQdrantClient({ url: fake.url, timeoutMs: 2_000 }), { name: COLLECTION, size: DIMENSIONS, distance: "Cosine" });
  const dashboard = await createDashboard({ pool: db.pool, auth: { token: TOKEN }, syncs: [CHUNK_SYNC], qdrant: { url: fake.url, readConsistency: "all" }, logger: capturedLog().logger });
  t.teardown(() => dashboard.close());

  // Qdrant holds the reconcile's first request: the request that started it has answered already.
  const held = fake.faults.hold();
  const started = await post(dashboard, "/syncs/reconcile", { collection: COLLECTION, repair: "0" });
  t.equal(started.status, 303);
  t.match(started.headers.get("location"), /notice=reconcile-started&collection=chunks/);
  await held.arrived;
  const running = await (await get(dashboard, "/syncs")).text();
  t.match(running, /data-reconcile-state="running"/, "the page shows it running");

  const second = await post(dashboard, "/syncs/reconcile", { collection: COLLECTION, repair: "1" });
  t.match(second.headers.get("location"), /notice=reconcile-busy&collection=chunks/, "a second reconcile of the same sync is refused");

  held.release();
  await waitFor("the reconcile to finish", async () => /data-reconcile-state="done"/.test(await (await get(dashboard, "/syncs")).text()));
  t.match(await (await get(dashboard, "/syncs")).text(), /done: drift 0/);
  t.equal(fake.queries.get("POST /collections/{name}/points/scroll")?.get("consistency"), "all", "Qdrant was read with the configured consistency");
  t.same(await db.query("select actor, action, target from dashboard_audit"), [{ actor: "token", action: "reconcile.dry_run", target: COLLECTION }]);
  t.equal((await db.query("select 1 from reconcile_runs")).length, 1, "recorded as the last reconcile");

  // Once it is over, the next one may start.
  const third = await post(dashboard, "/syncs/reconcile", { collection: COLLECTION, repair: "0" });
  t.match(third.headers.get("location"), /notice=reconcile-started/);
});
