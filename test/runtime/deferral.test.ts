import t from "tap";
import { sql } from "slonik";
import { z } from "zod";
import { defineTask } from "../../src/runtime/defineTask.ts";
import type { AnyTask } from "../../src/runtime/defineTask.ts";
import { JobDeferredError } from "../../src/runtime/errors.ts";
import { runtimeEvents } from "../../src/runtime/events.ts";
import { MIN_PARK_MS, wakeJobs } from "../../src/runtime/graphileJobs.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { createEffectsTable, effectCounts, queuedJobs } from "../helpers/fixtures.ts";
import { startWorker } from "../helpers/worker.ts";

/**
 * A task that defers itself `deferrals` times (per job, counted in this process) before
 * writing its effect: deferral is what flow control does to a job over a limit.
 */
function deferringTask(deferrals: number, runAfterMs: number, runs: Map<number, number>): AnyTask {
  return defineTask({
    payload: z.object({ n: z.number().int() }),
    async prepare({ payload }) {
      const run = (runs.get(payload.n) ?? 0) + 1;
      runs.set(payload.n, run);
      if (run <= deferrals) throw new JobDeferredError("limit full", new Date(Date.now() + runAfterMs));
    },
    async apply({ tx, job, payload }) {
      await tx.query(sql.unsafe`insert into test_effects (job_id, n, attempt, pid) values (${job.id}, ${payload.n}, ${job.attempts}, ${process.pid})`);
    },
  }) as AnyTask;
}

t.test("a deferred job runs again later without using up an attempt, and is not recorded as failed", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const runs = new Map<number, number>();
  let deferred = 0;
  const onDeferred = () => deferred++;
  runtimeEvents.on("job:deferred", onDeferred);
  t.teardown(() => void runtimeEvents.off("job:deferred", onDeferred));
  await startWorker(t, db, { tasks: new Map([["defers", deferringTask(3, 50, runs)]]) });
  // One attempt allowed: had a deferral counted, the job would be exhausted and dead-lettered.
  await db.query(
    "select graphile_worker.add_job('defers', json_build_object('n', n), max_attempts := 1) from generate_series(1, 5) as n",
  );
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 20_000 });
  t.same(await effectCounts(db), { rows: 5, distinct: 5 });
  t.same([...runs.values()], [4, 4, 4, 4, 4], "each job ran three times deferred, then once to apply");
  t.equal(deferred, 15);
  const effects = await db.query<{ attempt: number }>("select distinct attempt from test_effects");
  t.same(effects, [{ attempt: 1 }], "applied on attempt 1: the deferred runs were not counted");
  t.equal((await db.query("select 1 from dead_letters")).length, 0);
  t.equal((await db.query("select 1 from job_failures")).length, 0, "a deferral is not a failure");
  const history = await db.query<{ outcome: string; attempts: number }>("select outcome, attempts from job_history");
  t.same(new Set(history.map((row) => `${row.outcome}/${row.attempts}`)), new Set(["applied/1"]));
});

t.test("a job deferred in a named queue frees the queue for its next job, and wakeJobs makes it due at once", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const runs = new Map<number, number>();
  // Deferred for an hour: only a wake brings it back in the test's time.
  await startWorker(t, db, { tasks: new Map([["defers", deferringTask(1, 3_600_000, runs)]]) });
  await db.query("select graphile_worker.add_job('defers', json_build_object('n', 1), queue_name := 'serial')");
  await db.query("select graphile_worker.add_job('defers', json_build_object('n', 2), queue_name := 'serial')");
  // The second ran (and deferred) only because parking the first unlocked their queue.
  await waitFor("both jobs to be deferred", async () => runs.get(1) === 1 && runs.get(2) === 1);
  // A run is counted when its task defers; its park commits a moment later.
  const parked = await waitFor("both parks to commit", async () => {
    const [row] = await db.query<{ n: string; locked: string }>(
      "select count(*) as n, count(*) filter (where locked_at is not null) as locked from graphile_worker.jobs where run_at > now() + interval '50 minutes'",
    );
    return row!.n === "2" ? row : undefined;
  }).catch(() => undefined);
  t.same(parked, { n: "2", locked: "0" }, "both parked, unlocked, due in an hour");
  // Woken no sooner than flow control wakes a waiter: once graphile-worker has had MIN_PARK_MS
  // to record the parked runs (a no-op statement, which leaves nothing to wait for).
  await new Promise((resolve) => setTimeout(resolve, MIN_PARK_MS));
  const ids = (await db.query<{ id: string }>("select id from graphile_worker.jobs order by id")).map((row) => row.id);
  const woken = await db.appPool.connect((connection) => wakeJobs(connection, ids, 0));
  t.equal(woken, 2);
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 20_000 });
  t.same(await effectCounts(db), { rows: 2, distinct: 2 });
  t.equal(await db.appPool.connect((connection) => wakeJobs(connection, ids, 0)), 0, "a job no longer waiting is not touched");
});
