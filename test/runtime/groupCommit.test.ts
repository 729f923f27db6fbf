// Group commit: concurrent jobs share a transaction, and each still commits exactly once or
// fails alone. (The crash tests in exactly-once.test.ts run with group commit on too.)
import t from "tap";
import { runtimeEvents } from "../../src/runtime/events.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, queuedJobs } from "../helpers/fixtures.ts";
import { startWorker } from "../helpers/worker.ts";
import { callSizes } from "../fixtures/tasks/effect_batch.ts";

function recordBatches(t: { teardown(fn: () => unknown): void }) {
  const batches: Array<{ size: number; applied: number }> = [];
  const splits: Array<{ size: number; error: string }> = [];
  const onCommit = (batch: (typeof batches)[number]) => batches.push(batch);
  const onSplit = (split: (typeof splits)[number]) => splits.push(split);
  runtimeEvents.on("batch:committed", onCommit);
  runtimeEvents.on("batch:split", onSplit);
  t.teardown(() => {
    runtimeEvents.off("batch:committed", onCommit);
    runtimeEvents.off("batch:split", onSplit);
  });
  return Object.assign(batches, { splits });
}

t.test("concurrent jobs share commits, and every job's effect commits exactly once", async (t) => {
  const db = await createTestDatabase(t, { concurrency: 12 });
  await createEffectsTable(db);
  const batches = recordBatches(t);
  await addJobs(db, "effect", Array.from({ length: 400 }, (_, n) => ({ n })));
  await startWorker(t, db, { concurrency: 10, localQueueSize: 10 });
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 60_000 });
  t.same(await effectCounts(db), { rows: 400, distinct: 400 });
  t.equal(batches.reduce((sum, batch) => sum + batch.applied, 0), 400, "every job applied through a batch");
  const largest = Math.max(...batches.map((batch) => batch.size));
  t.ok(largest > 1, `jobs were committed together (${batches.length} commits for 400 jobs, largest ${largest})`);
});

t.test("a job that fails inside a batch fails alone; the others in its batch commit", async (t) => {
  const db = await createTestDatabase(t, { concurrency: 12 });
  await createEffectsTable(db);
  const batches = recordBatches(t);
  // Every tenth job fails once after writing (transient: retried), every tenth+5 hits a SQL
  // error after writing (permanent: dead letter). Their batches are re-run job by job.
  await addJobs(db, "effect", Array.from({ length: 100 }, (_, n) => ({
    n,
    ...(n % 10 === 0 ? { applyFailTimes: 1, failWith: "econnreset" } : {}),
    ...(n % 10 === 5 ? { applyFailTimes: 1, applyFailSql: true } : {}),
  })));
  await startWorker(t, db, { concurrency: 10, localQueueSize: 10 });
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 60_000 });
  t.same(await effectCounts(db), { rows: 90, distinct: 90 }, "the retried jobs once each, the dead ones not at all");
  const dead = await db.query<{ reason: string; last_error: string }>("select reason, last_error from dead_letters order by job_id");
  t.equal(dead.length, 10);
  t.ok(dead.every((row) => row.reason === "permanent" && /division by zero/.test(row.last_error)), "SQL errors dead-lettered with their reason");
  t.ok(batches.splits.some((split) => split.size > 1), `batches with a failing job were re-run job by job (${batches.splits.length} splits)`);
  t.ok(batches.some((batch) => batch.size > 1 && batch.applied === batch.size), "batches without one committed together");
  // (Had a failed job's applied-record survived, its retry would have been skipped as
  // already applied: 80 rows, not 90.)
});

t.test("a job that breaks the commit (a deferred constraint) fails alone; its batch-mates commit", async (t) => {
  const db = await createTestDatabase(t, { concurrency: 12 });
  await createEffectsTable(db);
  await db.query("create table test_unique (key text not null, constraint test_unique_key unique (key) deferrable initially deferred)");
  await addJobs(db, "effect", Array.from({ length: 60 }, (_, n) => ({ n, uniqueKey: n === 59 ? "key-0" : `key-${n}` })));
  await startWorker(t, db, { concurrency: 10, localQueueSize: 10 });
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 60_000 });
  t.same(await effectCounts(db), { rows: 59, distinct: 59 });
  const dead = await db.query<{ payload: { n: number }; last_error: string }>("select payload, last_error from dead_letters");
  t.equal(dead.length, 1, "only the duplicate is dead");
  t.match(dead[0], { payload: { n: 59 }, last_error: /test_unique_key/ });
});

t.test("a task's applyBatch writes the jobs of a batch in one call, each job exactly once", async (t) => {
  const db = await createTestDatabase(t, { concurrency: 12 });
  await createEffectsTable(db);
  const batches = recordBatches(t);
  callSizes.length = 0;
  await addJobs(db, "effect_batch", Array.from({ length: 400 }, (_, n) => ({ n })));
  await startWorker(t, db, { concurrency: 10, localQueueSize: 10 });
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 60_000 });
  t.same(await effectCounts(db), { rows: 400, distinct: 400 });
  t.equal(callSizes.reduce((sum, size) => sum + size, 0), 400, "every job was an item of exactly one call");
  t.ok(Math.max(...callSizes) > 1, `jobs were applied together (${callSizes.length} calls for 400 jobs)`);
  t.equal(batches.reduce((sum, batch) => sum + batch.applied, 0), 400);
  const [row] = await db.query<{ attempts: number }>("select count(*)::int as attempts from test_effects where attempt > 1");
  t.equal(row!.attempts, 0, "no job needed a second attempt");
});

t.test("when an applyBatch call fails, each of its jobs is applied alone: only the failing ones fail", async (t) => {
  const db = await createTestDatabase(t, { concurrency: 12 });
  await createEffectsTable(db);
  const batches = recordBatches(t);
  callSizes.length = 0;
  // As in the per-job test: every tenth job fails once (transient: retried), every tenth+5
  // hits a SQL error (permanent: dead letter). Each failure fails its whole call.
  await addJobs(db, "effect_batch", Array.from({ length: 100 }, (_, n) => ({
    n,
    ...(n % 10 === 0 ? { applyFailTimes: 1, failWith: "econnreset" } : {}),
    ...(n % 10 === 5 ? { applyFailTimes: 1, applyFailSql: true } : {}),
  })));
  await startWorker(t, db, { concurrency: 10, localQueueSize: 10 });
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 60_000 });
  t.same(await effectCounts(db), { rows: 90, distinct: 90 }, "the retried jobs once each, the dead ones not at all");
  const dead = await db.query<{ payload: { n: number }; reason: string }>("select payload, reason from dead_letters order by (payload->>'n')::int");
  t.same(dead.map((row) => row.payload.n), [5, 15, 25, 35, 45, 55, 65, 75, 85, 95], "exactly the jobs whose own apply failed");
  t.ok(dead.every((row) => row.reason === "permanent"));
  const [innocent] = await db.query<{ retried: number }>("select count(*)::int as retried from test_effects where attempt > 1 and n % 10 <> 0");
  t.equal(innocent!.retried, 0, "the jobs that shared a failed call were re-applied in the same attempt, not retried");
  t.ok(batches.splits.some((split) => split.size > 1), "failed calls were split");
  t.ok(callSizes.some((size) => size > 1) && callSizes.some((size) => size === 1), "calls of many jobs, and of one after a split");
});
