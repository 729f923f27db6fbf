// Scrape-time figures from Postgres: exact values for a known state, and absent (not stale, not a crash) when the database fails.
import { randomUUID } from "node:crypto";
import pg from "pg";
import t from "tap";
import { enqueuePointChanges } from "../../src/outbox/outbox.ts";
import { Metrics } from "../../src/ops/metrics.ts";
import { createProbePool } from "../../src/ops/probePool.ts";
import { createTestDatabase, testLog, type TestDatabase } from "../helpers/db.ts";
import { addJobs } from "../helpers/fixtures.ts";
import { parseExposition } from "../helpers/metrics.ts";

function metricsFor(t: { teardown(fn: () => unknown): void }, db: TestDatabase): Metrics {
  const pool = createProbePool(db.url, { timeoutMs: 2_000 });
  const metrics = new Metrics({ log: testLog, tasks: ["effect"], defaultMetrics: false, database: { pool, collection: "chunks", deadAfterMs: 30_000 } });
  t.teardown(async () => {
    metrics.close();
    await pool.end();
  });
  return metrics;
}

/** Puts each job (by its payload's n) into one state, as the sweeper and graphile-worker would. */
async function jobsInEveryState(db: TestDatabase): Promise<void> {
  await addJobs(db, "effect", [1, 2, 3, 4, 5, 6].map((n) => ({ n })));
  await addJobs(db, "fan_out", [{ n: 7 }]);
  const set = (n: number, assignments: string) => db.query(`update graphile_worker._private_jobs set ${assignments} where payload->>'n' = '${n}'`);
  await set(2, "run_at = now() + interval '1 hour'"); // scheduled
  await set(3, "locked_at = now(), locked_by = 'test-worker'"); // running
  await set(4, "attempts = 1, run_at = now() + interval '1 minute'"); // retrying, backing off
  await set(5, "attempts = 1"); // retrying, due
  await set(6, "attempts = max_attempts"); // exhausted
}

t.test("queue depth, dead letters, outbox, drift and workers are read exactly as the database holds them", async (t) => {
  const db = await createTestDatabase(t);
  await jobsInEveryState(db);
  await db.query(`
    insert into dead_letters (job_id, revision, task, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
    values (101, 0, 'effect', '{}', 'permanent', 1, 25, 'PermanentError: no', now(), now()),
           (102, 0, 'effect', '{}', 'exhausted', 3, 3, 'Error: 503', now(), now()),
           (103, 0, 'fan_out', '{}', 'permanent', 1, 25, 'PermanentError: no', now(), now())`);
  const [a, b, c, other] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
  await enqueuePointChanges(db.appPool, "chunks", [a, b, c]);
  await enqueuePointChanges(db.appPool, "elsewhere", [other]);
  await db.query("update outbox set created_at = now() - interval '1 hour' where point_id = $1", [a]);
  await db.query("update outbox set state = 'dead', last_error = 'Bad Request', dead_at = now() where point_id = $1", [c]);
  await db.query(`
    insert into reconcile_runs (collection, started_at, qdrant_points, postgres_points, missing, extra, stale, repaired)
    values ('chunks', now(), 10, 10, 5, 5, 5, false),
           ('chunks', now(), 10, 12, 2, 0, 1, true),
           ('elsewhere', now(), 1, 1, 9, 9, 9, false)`);
  await db.query(`
    insert into workers (id, hostname, pid, concurrency, started_at, heartbeat_at)
    values ('alive-1', 'h', 1, 4, now(), now()), ('alive-2', 'h', 2, 4, now() - interval '10 seconds', now() - interval '10 seconds'),
           ('dead-1', 'h', 3, 4, now() - interval '1 hour', now() - interval '1 hour')`);

  const metrics = parseExposition(await metricsFor(t, db).render());
  const jobs = Object.fromEntries(metrics.samples("pgconverge_jobs").map(({ labels, value }) => [`${labels.task}/${labels.state}`, value]));
  t.same(jobs, {
    "effect/pending": 1,
    "effect/scheduled": 1,
    "effect/running": 1,
    "effect/retrying": 2,
    "effect/exhausted": 1,
    "fan_out/pending": 1,
    "fan_out/scheduled": 0,
    "fan_out/running": 0,
    "fan_out/retrying": 0,
    "fan_out/exhausted": 0,
  });
  t.equal(metrics.value("pgconverge_dead_letters", { task: "effect" }), 2);
  t.equal(metrics.value("pgconverge_dead_letters", { task: "fan_out" }), 1);
  t.equal(metrics.value("pgconverge_outbox_changes", { collection: "chunks", state: "pending" }), 2, "the other collection's change is not counted");
  t.equal(metrics.value("pgconverge_outbox_changes", { collection: "chunks", state: "dead" }), 1);
  const age = metrics.value("pgconverge_outbox_oldest_pending_age_seconds", { collection: "chunks" })!;
  t.ok(age >= 3600 && age < 3600 + 600, `the oldest pending change is an hour old (${age} s)`);
  t.same(
    metrics.samples("pgconverge_reconcile_drift"),
    [
      { labels: { collection: "chunks", kind: "missing" }, value: 2 },
      { labels: { collection: "chunks", kind: "extra" }, value: 0 },
      { labels: { collection: "chunks", kind: "stale" }, value: 1 },
    ],
    "the collection's latest run",
  );
  t.equal(metrics.value("pgconverge_workers", { state: "alive" }), 2);
  t.equal(metrics.value("pgconverge_workers", { state: "dead" }), 1);
  t.same(metrics.samples("pgconverge_scrape_errors_total"), []);
});

t.test("an empty database reports zeros for known tasks and no drift before the first reconcile", async (t) => {
  const db = await createTestDatabase(t);
  const metrics = parseExposition(await metricsFor(t, db).render());
  t.equal(metrics.value("pgconverge_jobs", { task: "effect", state: "pending" }), 0);
  t.equal(metrics.samples("pgconverge_jobs").length, 5);
  t.same(metrics.samples("pgconverge_dead_letters"), []);
  t.same(metrics.samples("pgconverge_reconcile_drift"), []);
  t.same(metrics.samples("pgconverge_reconcile_last_run_timestamp_seconds"), []);
  t.equal(metrics.value("pgconverge_outbox_oldest_pending_age_seconds", { collection: "chunks" }), 0);
});

t.test("when the database goes away, a scrape still answers: its families are absent and the failures counted", async (t) => {
  const db = await createTestDatabase(t);
  await addJobs(db, "effect", [{ n: 1 }]);
  const metrics = metricsFor(t, db);
  const before = parseExposition(await metrics.render());
  t.equal(before.value("pgconverge_jobs", { task: "effect", state: "pending" }), 1);
  t.equal(before.value("pgconverge_workers", { state: "alive" }), 0);

  // Terminates every session of the database, the probe pool's idle one included.
  const admin = new pg.Client({ connectionString: db.url.replace(`/${db.name}`, "/postgres") });
  await admin.connect();
  await admin.query(`drop database ${db.name} with (force)`);
  await admin.end();

  for (const attempt of [1, 2]) {
    const after = parseExposition(await metrics.render());
    for (const family of ["pgconverge_jobs", "pgconverge_dead_letters", "pgconverge_outbox_changes", "pgconverge_outbox_oldest_pending_age_seconds", "pgconverge_reconcile_drift", "pgconverge_workers", "pgconverge_jobs_unknown_task"]) {
      t.same(after.samples(family), [], `scrape ${attempt}: ${family} is absent, not stale`);
    }
    for (const query of ["jobs", "dead_letters", "outbox", "reconcile_runs", "workers", "unknown_tasks"]) {
      t.equal(after.value("pgconverge_scrape_errors_total", { query }), attempt, `scrape ${attempt}: the ${query} query failed`);
    }
    t.equal(after.value("pgconverge_jobs_started_total", { task: "effect" }), 0, "in-process metrics are still reported");
  }
});
