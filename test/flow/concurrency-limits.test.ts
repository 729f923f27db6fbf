// Fleet-wide concurrency limits, in one process: what waits and what runs, what status, /metrics
// and flow_status show, a limit lowered while in use, and the settings' one-line errors.
import t from "tap";
import { sql } from "slonik";
import { z } from "zod";
import { loadConfig } from "../../src/config.ts";
import { FlowControl } from "../../src/flow/flowControl.ts";
import { resolveLimits } from "../../src/flow/options.ts";
import { takeSlots, upsertLimits } from "../../src/flow/queries.ts";
import type { Job } from "graphile-worker";
import { Metrics } from "../../src/ops/metrics.ts";
import { createProbePool } from "../../src/ops/probePool.ts";
import { readStatus } from "../../src/ops/status.ts";
import { defineTask, type AnyTask } from "../../src/runtime/defineTask.ts";
import { createTestDatabase, testLog, waitFor, type TestDatabase } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, queuedJobs } from "../helpers/fixtures.ts";
import { parseExposition } from "../helpers/metrics.ts";
import { startWorker } from "../helpers/worker.ts";

/** A task whose prepare waits until the test lets it go, one job at a time (`gate.open()`). */
function gatedTask(flow: { concurrency?: number; queue?: string }) {
  const waiting: Array<() => void> = [];
  const task = defineTask({
    payload: z.object({ n: z.number().int() }),
    flow,
    async prepare() {
      await new Promise<void>((resolve) => waiting.push(resolve));
    },
    async apply({ tx, job, payload }) {
      await tx.query(sql.unsafe`insert into test_effects (job_id, n, attempt, pid) values (${job.id}, ${payload.n}, ${job.attempts}, ${process.pid})`);
    },
  }) as AnyTask;
  return { task, running: () => waiting.length, open: () => waiting.shift()?.() };
}

async function limitRow(db: TestDatabase) {
  const [row] = await db.query<{ max_running: number; in_use: number; lowering_to: number | null; waiting: number }>(
    "select l.max_running, l.in_use, l.lowering_to, s.waiting from flow_limits l join flow_status s using (kind, name) where name = 'gated'",
  );
  return row;
}

t.test("over the limit, jobs wait parked; status, /metrics and flow_status show slots in use and waiters", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const gate = gatedTask({ concurrency: 1 });
  await startWorker(t, db, { tasks: new Map([["gated", gate.task]]), concurrency: 4 });
  await addJobs(db, "gated", [1, 2, 3].map((n) => ({ n })));
  await waitFor("one job running, two waiting", async () => gate.running() === 1 && (await limitRow(db))?.waiting === 2);
  t.same(await limitRow(db), { max_running: 1, in_use: 1, lowering_to: null, waiting: 2 });
  const parked = await db.query("select 1 from graphile_worker.jobs where locked_at is null and run_at > now() + interval '5 minutes'");
  t.equal(parked.length, 2, "the waiters are parked (unlocked, due only at the safety timeout), holding no slot");

  const status = await readStatus(db.appPool, { deadAfterMs: 30_000 });
  t.match(status.flow.limits, [{ kind: "task", name: "gated", maxRunning: 1, inUse: 1, waiting: 2 }]);
  t.ok((status.flow.limits[0]!.oldestWaitingAgeSeconds ?? -1) >= 0, "with the age of the oldest waiter");

  const pool = createProbePool(db.url, { timeoutMs: 2_000 });
  const metrics = new Metrics({ log: testLog, tasks: ["gated"], defaultMetrics: false, database: { pool, collection: "chunks", deadAfterMs: 30_000 } });
  t.teardown(async () => {
    metrics.close();
    await pool.end();
  });
  const exposition = parseExposition(await metrics.render());
  const labels = { kind: "task", name: "gated" };
  t.equal(exposition.value("pgconverge_flow_in_use", labels), 1);
  t.equal(exposition.value("pgconverge_flow_waiting", labels), 2);
  t.equal(exposition.value("pgconverge_flow_max_running", labels), 1);

  // Each finished job wakes the next waiter: all three run, one at a time.
  for (let finished = 1; finished <= 3; finished++) {
    await waitFor(`job ${finished} to be running alone`, async () => gate.running() === 1);
    t.equal((await limitRow(db))?.in_use, 1, "never more than one slot taken");
    gate.open();
    await waitFor(`${finished} job(s) applied`, async () => (await effectCounts(db)).rows === finished);
  }
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0);
  t.same(await limitRow(db), { max_running: 1, in_use: 0, lowering_to: null, waiting: 0 });
});

t.test("a limit lowered below the slots in use comes down as they are freed, never letting in_use exceed it", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const gate = gatedTask({ concurrency: 3 });
  await startWorker(t, db, { tasks: new Map([["gated", gate.task]]), concurrency: 6 });
  await addJobs(db, "gated", [1, 2, 3, 4].map((n) => ({ n })));
  await waitFor("three running", async () => gate.running() === 3 && (await limitRow(db))?.waiting === 1);
  // Another worker starts with a lower limit: the latest start wins.
  const [written] = await upsertLimits(db.appPool, [{ kind: "task", name: "gated", maxRunning: 1 }]);
  t.equal(written?.previous, 3, "the upsert reports the size it replaced (the worker logs it as a warning)");
  t.same(await limitRow(db), { max_running: 3, in_use: 3, lowering_to: 1, waiting: 1 });
  gate.open();
  await waitFor("one job applied", async () => (await effectCounts(db)).rows === 1);
  // Its slot is freed just after its commit, in the job's own finally.
  await waitFor("its slot freed", async () => (await limitRow(db))?.in_use === 2);
  t.same(await limitRow(db), { max_running: 2, in_use: 2, lowering_to: 1, waiting: 1 }, "coming down, and the waiter still waits");
  gate.open();
  gate.open();
  await waitFor("three jobs applied", async () => (await effectCounts(db)).rows === 3);
  await waitFor("the last job to run", async () => gate.running() === 1);
  t.same(await limitRow(db), { max_running: 1, in_use: 1, lowering_to: null, waiting: 0 }, "at the new limit");
  gate.open();
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0);
  t.same(await effectCounts(db), { rows: 4, distinct: 4 });
});

t.test("an admission that waited for the limit's row lock decides on the row as the holder left it", async (t) => {
  const db = await createTestDatabase(t);
  const [limit] = await upsertLimits(db.appPool, [{ kind: "task", name: "gated", maxRunning: 1 }]);
  const job = { id: "1", revision: 0, locked_by: "worker-b" } as Job;
  // Another admission holds the row lock and takes the last slot.
  const holder = await db.pool.connect();
  t.teardown(() => holder.release());
  await holder.query("begin");
  await holder.query("update flow_limits set in_use = in_use + 1 where id = $1", [limit!.id]);
  const waiting = db.appPool.transaction((tx) => takeSlots(tx, [limit!.id], job));
  await waitFor("the admission to wait for the lock", async () =>
    (await db.query("select 1 from pg_locks where not granted and locktype = 'transactionid'")).length > 0);
  await holder.query("commit");
  t.equal(await waiting, false, "the limit was full when the lock was granted: not admitted");
  const [row] = await db.query<{ in_use: number; slots: string; waiters: string }>(
    "select in_use, (select count(*) from flow_slots) as slots, (select count(*) from flow_waiters) as waiters from flow_limits");
  t.same(row, { in_use: 1, slots: "0", waiters: "1" }, "no slot taken, the job recorded as waiting");
});

t.test("a slot left by an earlier run of the same job under the same holder (its release failed) does not fail the job's next admission", async (t) => {
  const db = await createTestDatabase(t);
  const flow = new FlowControl({ pool: db.appPool, log: testLog, limits: new Map([["gated", [{ kind: "task", name: "gated", maxRunning: 2 }]]]) });
  await flow.install();
  const job = { id: "7", revision: 0, locked_by: "worker-b", task_identifier: "gated", attempts: 1 } as Job;
  // The earlier run took its slot and never gave it back.
  await db.query("update flow_limits set in_use = 1");
  await db.query("insert into flow_slots (limit_id, job_id, revision, locked_by) select id, 7, 0, 'worker-b' from flow_limits");
  const admission = await flow.admit(job);
  const slots = () => db.query<{ in_use: number; slots: string }>("select in_use, (select count(*) from flow_slots) as slots from flow_limits");
  t.same(await slots(), [{ in_use: 1, slots: "1" }], "the stale slot freed and one taken for this run: the count matches the rows");
  await admission.release();
  t.same(await slots(), [{ in_use: 0, slots: "0" }]);
});

t.test("bad flow settings are one-line errors naming the setting", async (t) => {
  const error = (env: Record<string, string>) => {
    try {
      loadConfig(env);
      return "no error";
    } catch (caught) {
      return (caught as Error).message;
    }
  };
  t.equal(loadConfig({ FLOW_TASK_CONCURRENCY: " embed_chunks=4, other = 2 " }).FLOW_TASK_CONCURRENCY?.other, 2);
  t.equal(error({ FLOW_TASK_CONCURRENCY: "embed_chunks" }), 'FLOW_TASK_CONCURRENCY: must be name=n pairs separated by commas, e.g. embed_chunks=4,other=2 (bad part "embed_chunks") (got "embed_chunks")');
  t.equal(error({ FLOW_QUEUE_CONCURRENCY: "gpu=0" }), 'FLOW_QUEUE_CONCURRENCY: gpu\'s limit must be a whole number from 1 to 100000 (got "gpu=0")');
  t.equal(error({ FLOW_QUEUE_CONCURRENCY: "gpu=4,gpu=2" }), 'FLOW_QUEUE_CONCURRENCY: gpu is given twice (got "gpu=4,gpu=2")');
  t.throws(() => defineTask({ payload: z.object({}), flow: { concurrency: 0 }, async apply() {} }), /^defineTask: flow.concurrency must be a whole number from 1 to 100000 \(got 0\)$/);
  t.throws(() => defineTask({ payload: z.object({}), flow: { queue: "g p u" }, async apply() {} }), /^defineTask: flow.queue must be letters/);
  const inQueue = new Map([["render", { flow: { queue: "gpu" } }]]);
  t.throws(() => resolveLimits(inQueue), /^task render is in flow queue "gpu", which has no size: set flow.queues.gpu \(FLOW_QUEUE_CONCURRENCY=gpu=n\)$/);
  t.same(resolveLimits(inQueue, { queues: { gpu: 2 }, concurrency: { render: 5 } }).get("render"), [
    { kind: "task", name: "render", maxRunning: 5 },
    { kind: "queue", name: "gpu", maxRunning: 2 },
  ], "the worker's own limit of a task joins its queue's");
  t.throws(() => resolveLimits(inQueue, { queues: { gpu: 1.5 } }), /^flow.queues.gpu: must be a whole number from 1 to 100000 \(got 1.5\)$/);
});
