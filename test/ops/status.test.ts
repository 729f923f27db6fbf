import t from "tap";
import { loadConfig } from "../../src/config.ts";
import { readStatus } from "../../src/ops/status.ts";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db.ts";
import { addJobs, createEffectsTable } from "../helpers/fixtures.ts";
import { startWorker } from "../helpers/worker.ts";

async function count(db: TestDatabase, query: string): Promise<number> {
  const [row] = await db.query<{ count: string }>(query);
  return Number(row!.count);
}

t.test("status --json reports exactly the state the database is in", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  // One slot: once the slow job holds it, later jobs stay where they are put.
  const worker = await startWorker(t, db, { concurrency: 1 });

  // A dead letter, the real way: a permanent failure.
  await addJobs(db, "effect", [{ n: 1, failTimes: 1, failWith: "permanent" }]);
  await waitFor("the dead letter", async () => (await count(db, "select count(*) from dead_letters")) === 1);
  await waitFor("the failed job to leave the queue", async () => (await count(db, "select count(*) from graphile_worker.jobs")) === 0);

  // A running job: the worker's only slot is busy preparing it.
  await addJobs(db, "effect", [{ n: 2, prepareMs: 15_000 }]);
  await waitFor("the slow job to run", async () => (await count(db, "select count(*) from graphile_worker.jobs where locked_at is not null")) === 1);

  // Two pending, one scheduled, one retrying (failed once, next attempt in an hour).
  await addJobs(db, "effect", [{ n: 3 }, { n: 4 }]);
  await db.query(`select graphile_worker.add_job('effect', '{"n": 5}', run_at => now() + interval '1 hour')`);
  const [retrying] = await db.query<{ id: string }>(
    `select id from graphile_worker.add_job('fan_out', '{"n": 6, "children": 0, "failAfterEnqueue": false}', run_at => now() + interval '1 hour')`,
  );
  await db.query("update graphile_worker._private_jobs set attempts = 1, last_error = 'read ECONNRESET' where id = $1", [retrying!.id]);

  // The outbox: one change waiting, one dead; and a reconcile run that found drift.
  await db.query(`
    insert into outbox (collection, point_id) values ('chunks', gen_random_uuid());
    insert into outbox (collection, point_id, state, last_error, dead_at) values ('chunks', gen_random_uuid(), 'dead', 'Bad Request: wrong vector size', now());
    insert into reconcile_runs (collection, started_at, qdrant_points, postgres_points, missing, extra, stale, repaired)
      values ('chunks', now() - interval '1 minute', 10, 11, 2, 1, 0, false);
  `);

  const result = await runCli(["status", "--json"], { env: { DATABASE_URL: db.url } });
  t.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout);
  const { oldestPendingAgeSeconds, byTask, unknownTasks, ...jobs } = report.jobs;
  t.same(jobs, { pending: 2, scheduled: 1, retrying: 1, running: 1, exhausted: 0, dead: 1 }, "jobs by state");
  t.same(unknownTasks, [], "the live worker has every queued task");
  t.ok(oldestPendingAgeSeconds >= 0 && oldestPendingAgeSeconds < 60, "queue lag of the pending jobs");
  t.same(byTask.effect, { pending: 2, scheduled: 1, retrying: 0, running: 1, exhausted: 0, dead: 1, oldestPendingAgeSeconds });
  t.same(byTask.fan_out, { pending: 0, scheduled: 0, retrying: 1, running: 0, exhausted: 0, dead: 0, oldestPendingAgeSeconds: null });
  t.same(Object.keys(byTask).sort(), ["effect", "fan_out"]);

  t.match(report.outbox, { pending: 1, dead: 1, retrying: 0, byCollection: { chunks: { pending: 1, dead: 1 } } });
  t.ok(report.outbox.oldestPendingAgeSeconds >= 0 && report.outbox.oldestPendingAgeSeconds < 60);

  t.match(report.workers, { alive: 1, dead: 0, deadAfterMs: 15_000 });
  t.equal(report.workers.list.length, 1);
  t.match(report.workers.list[0], { id: worker.heartbeat.workerId, pid: process.pid, alive: true, runningJobs: 1, concurrency: 1 });
  t.ok(report.workers.list[0].heartbeatAgeSeconds < 5, "a fresh heartbeat");

  t.match(report.reconcile.byCollection.chunks, { drift: 3, missing: 2, extra: 1, stale: 0, repaired: false });

  const human = await runCli(["status"], { env: { DATABASE_URL: db.url } });
  t.equal(human.code, 0, human.stderr);
  t.match(human.stdout, /^task +pending +scheduled +retrying +running +exhausted +dead +oldest pending$/m);
  t.match(human.stdout, /^effect +2 +1 +0 +1 +0 +1 +\S/m, "an aligned row per task");
  t.match(human.stdout, /^fan_out +0 +0 +1 +0 +0 +0 +-$/m);
  t.match(human.stdout, /^\(all\) +2 +1 +1 +1 +0 +1 /m, "and a total");
  t.match(human.stdout, /^chunks +1 +0 +0 +1 +\S/m, "outbox per collection");
  t.match(human.stdout, /^workers: 1 alive, 0 dead \(dead after 15s without a heartbeat\)$/m);
  t.match(human.stdout, /^chunks +3 +2 +1 +0 +no +/m, "last reconcile");
});

t.test("a worker whose heartbeat is older than the threshold is reported dead", async (t) => {
  const db = await createTestDatabase(t);
  await db.query(`
    insert into workers (id, hostname, pid, concurrency, started_at, heartbeat_at)
    values ('gone-1-aa', 'gone', 1, 4, now() - interval '1 hour', now() - interval '50 seconds'),
           ('here-2-bb', 'here', 2, 4, now() - interval '1 hour', now() - interval '1 second')
  `);
  const report = await readStatus(db.appPool, { deadAfterMs: 30_000 });
  t.match(report.workers, { alive: 1, dead: 1 });
  t.same(
    report.workers.list.map((worker) => [worker.id, worker.alive]),
    [["here-2-bb", true], ["gone-1-aa", false]],
  );
  const lenient = await readStatus(db.appPool, { deadAfterMs: 120_000 });
  t.match(lenient.workers, { alive: 2, dead: 0 }, "the threshold is the caller's WORKER_DEAD_AFTER_MS");

  const cli = await runCli(["status", "--json"], { env: { DATABASE_URL: db.url, ...{ WORKER_DEAD_AFTER_MS: "60000" } } });
  t.equal(cli.code, 0, cli.stderr);
  t.match(JSON.parse(cli.stdout).workers, { alive: 2, dead: 0, deadAfterMs: 60_000 });

  const [psql] = await db.query<{ alive: string }>("select count(*) filter (where alive) as alive from worker_status");
  t.equal(Number(psql!.alive), 1, "psql without the setting uses the default threshold");
  const [fallback] = await db.query<{ ms: string }>("select pgconverge_worker_dead_after_ms() as ms");
  t.equal(Number(fallback!.ms), loadConfig({}).WORKER_DEAD_AFTER_MS, "which is WORKER_DEAD_AFTER_MS's default");
});

t.test("status of an empty queue says so", async (t) => {
  const db = await createTestDatabase(t);
  const result = await runCli(["status", "--json"], { env: { DATABASE_URL: db.url } });
  t.equal(result.code, 0, result.stderr);
  t.same(JSON.parse(result.stdout), {
    jobs: { pending: 0, scheduled: 0, retrying: 0, running: 0, exhausted: 0, dead: 0, oldestPendingAgeSeconds: null, byTask: {}, unknownTasks: [] },
    outbox: { pending: 0, retrying: 0, inFlight: 0, dead: 0, oldestPendingAgeSeconds: null, byCollection: {} },
    workers: { alive: 0, dead: 0, deadAfterMs: 15_000, list: [] },
    reconcile: { byCollection: {} },
    flow: { limits: [] },
    services: {},
  });
  const human = await runCli(["status"], { env: { DATABASE_URL: db.url } });
  t.equal(human.stdout, "jobs: none queued, none dead\n\noutbox: empty, Qdrant has every change\n\nworkers: none registered (dead after 15s without a heartbeat)\n\nreconcile: never run\n");
});
