// The worker's /metrics after a known run: exact job, relay and dead-letter figures from a real process.
import { randomUUID } from "node:crypto";
import t from "tap";
import { DIMENSIONS, insertDocument, pendingOutbox, putChunk } from "../helpers/chunks.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { addJobs, createEffectsTable, queuedJobs } from "../helpers/fixtures.ts";
import { freePort, get, parseExposition } from "../helpers/metrics.ts";
import { spawnWorker, waitForRegistration } from "../helpers/worker.ts";
import { FakeQdrant } from "../servers/qdrant.ts";

const FAMILIES = [
  "pgconverge_jobs_started_total",
  "pgconverge_jobs_succeeded_total",
  "pgconverge_jobs_skipped_total",
  "pgconverge_jobs_failed_total",
  "pgconverge_jobs_dead_total",
  "pgconverge_job_duration_seconds",
  "pgconverge_jobs",
  "pgconverge_dead_letters",
  "pgconverge_outbox_changes",
  "pgconverge_outbox_oldest_pending_age_seconds",
  "pgconverge_relay_batch_size",
  "pgconverge_relay_batch_duration_seconds",
  "pgconverge_relay_changes_total",
  "pgconverge_reconcile_drift",
  "pgconverge_reconcile_last_run_timestamp_seconds",
  "pgconverge_workers",
  "pgconverge_heartbeats_total",
  "pgconverge_heartbeat_last_success_timestamp_seconds",
  "pgconverge_pool_connections",
  "pgconverge_pool_waiting_clients",
  "pgconverge_scrape_errors_total",
  "nodejs_eventloop_lag_p99_seconds",
  "process_open_fds",
];

t.test("after 5 jobs, one retried once, one dead-lettered and 3 chunks relayed, /metrics reports exactly that", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const qdrant = new FakeQdrant();
  await qdrant.start();
  t.teardown(() => qdrant.stop());
  const port = await freePort();
  const worker = spawnWorker(t, db, {
    METRICS_PORT: String(port),
    QDRANT_URL: qdrant.url,
    EMBED_DIMENSIONS: String(DIMENSIONS),
    RECONCILE_CRON: "off",
  });
  await waitForRegistration(db, worker.child.pid!);
  const metricsUrl = `http://127.0.0.1:${port}/metrics`;

  await addJobs(db, "effect", [1, 2, 3, 4, 5].map((n) => ({ n })));
  await addJobs(db, "effect", [{ n: 6, failTimes: 1, failWith: "http503" }]);
  await addJobs(db, "effect", [{ n: 7, failTimes: 1, failWith: "permanent" }]);
  const documentId = await insertDocument(db);
  for (const content of ["alpha", "beta", "gamma"]) await putChunk(db, documentId, randomUUID(), content);
  // Read at scrape time from the table, not from this process's memory.
  await db.query("insert into reconcile_runs (collection, started_at, qdrant_points, postgres_points, missing, extra, stale, repaired) values ('chunks', now(), 3, 4, 2, 1, 0, false)");

  // Skip the retried job's backoff (about 3 s) once its first attempt has failed.
  await waitFor("the first attempt of job 6 to fail", async () => (await db.query("select 1 from graphile_worker.jobs where attempts = 1 and locked_at is null")).length > 0);
  await db.query("update graphile_worker._private_jobs set run_at = now() where attempts = 1");
  await waitFor("every job to leave the queue", async () => (await queuedJobs(db)) === 0);
  await waitFor("the outbox to drain", async () => (await pendingOutbox(db)) === 0);
  // The relay reports a batch just after acknowledging it; poll the endpoint, not the clock.
  const metrics = await waitFor("the relay's batches to be counted", async () => {
    const scrape = parseExposition((await get(metricsUrl)).body);
    return scrape.value("pgconverge_relay_changes_total", { outcome: "synced" }) === 3 ? scrape : undefined;
  });

  for (const family of FAMILIES) t.ok(metrics.families.has(family), `exposes ${family}`);
  const effect = { task: "effect" };
  t.equal(metrics.value("pgconverge_jobs_started_total", effect), 8, "7 jobs, one of them twice");
  t.equal(metrics.value("pgconverge_jobs_succeeded_total", effect), 6);
  t.equal(metrics.value("pgconverge_jobs_failed_total", effect), 1, "the 503 attempt");
  t.equal(metrics.value("pgconverge_jobs_skipped_total", effect), 0);
  t.equal(metrics.value("pgconverge_jobs_dead_total", { task: "effect", reason: "permanent" }), 1);
  t.equal(metrics.value("pgconverge_jobs_dead_total", { task: "effect", reason: "exhausted" }), 0);
  t.equal(metrics.value("pgconverge_jobs_started_total", { task: "fan_out" }), 0, "known tasks start at 0");
  t.equal(metrics.value("pgconverge_job_duration_seconds_count", { task: "effect", outcome: "succeeded" }), 6);
  t.equal(metrics.value("pgconverge_job_duration_seconds_count", { task: "effect", outcome: "failed" }), 1);
  t.equal(metrics.value("pgconverge_job_duration_seconds_count", { task: "effect", outcome: "dead" }), 1);
  t.equal(metrics.value("pgconverge_job_duration_seconds_bucket", { task: "effect", outcome: "succeeded", le: "+Inf" }), 6);

  for (const state of ["pending", "scheduled", "running", "retrying", "exhausted"]) {
    t.equal(metrics.value("pgconverge_jobs", { task: "effect", state }), 0, `no ${state} effect jobs`);
  }
  t.equal(metrics.value("pgconverge_dead_letters", effect), 1);
  t.equal(metrics.value("pgconverge_outbox_changes", { collection: "chunks", state: "pending" }), 0);
  t.equal(metrics.value("pgconverge_outbox_changes", { collection: "chunks", state: "dead" }), 0);
  t.equal(metrics.value("pgconverge_outbox_oldest_pending_age_seconds", { collection: "chunks" }), 0);

  t.equal(metrics.value("pgconverge_relay_batch_size_sum"), 3, "each change claimed once");
  const batches = metrics.value("pgconverge_relay_batch_size_count")!;
  t.ok(batches >= 1 && batches <= 3, `1 to 3 batches (${batches})`);
  t.equal(metrics.value("pgconverge_relay_batch_duration_seconds_count"), batches);
  t.equal(metrics.value("pgconverge_relay_changes_total", { outcome: "retried" }), 0);
  t.equal(metrics.value("pgconverge_relay_changes_total", { outcome: "dead" }), 0);

  t.equal(metrics.value("pgconverge_reconcile_drift", { collection: "chunks", kind: "missing" }), 2);
  t.equal(metrics.value("pgconverge_reconcile_drift", { collection: "chunks", kind: "extra" }), 1);
  t.equal(metrics.value("pgconverge_reconcile_drift", { collection: "chunks", kind: "stale" }), 0);
  t.equal(metrics.value("pgconverge_workers", { state: "alive" }), 1);
  t.equal(metrics.value("pgconverge_workers", { state: "dead" }), 0);
  t.ok(metrics.value("pgconverge_heartbeats_total", { result: "ok" })! >= 1, "heartbeats counted");
  t.equal(metrics.value("pgconverge_heartbeats_total", { result: "failed" }), 0);
  t.ok(metrics.value("pgconverge_heartbeat_last_success_timestamp_seconds")! > 0);
  for (const pool of ["queue", "app"]) {
    t.ok(metrics.value("pgconverge_pool_connections", { pool, state: "idle" })! >= 0, `${pool} pool reported`);
    t.equal(metrics.value("pgconverge_pool_waiting_clients", { pool }), 0);
  }
  t.same(metrics.samples("pgconverge_scrape_errors_total"), [], "no scrape query failed");
  t.ok(metrics.value("nodejs_eventloop_lag_p99_seconds")! >= 0);

  t.same(await get(`http://127.0.0.1:${port}/healthz`), { status: 200, type: "application/json", body: '{"status":"ok"}\n' });
  t.same(await get(`http://127.0.0.1:${port}/readyz`), { status: 200, type: "application/json", body: '{"status":"ready"}\n' });

  worker.child.kill("SIGTERM");
  t.equal((await worker.exited).code, 0, "the metrics server does not hold the exit");
});
