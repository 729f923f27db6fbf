// A running job replaced through its job_key, whose worker then dies, is not a dead letter:
// graphile-worker marks it exhausted, but the newer job with its key does its work.
import t from "tap";
import { Sweeper } from "../../src/liveness/sweeper.ts";
import { recordSuperseded } from "../../src/runtime/graphileJobs.ts";
import { addJob } from "../../src/runtime/queries.ts";
import { createTestDatabase, testLog } from "../helpers/db.ts";

t.test("a superseded running job of a dead worker is completed, not dead-lettered; a plain exhausted one still is", async (t) => {
  const db = await createTestDatabase(t);
  const sweeper = new Sweeper({ pool: db.appPool, log: testLog, deadAfterMs: 1_000, intervalMs: 60_000, historyRetentionDays: 7 });
  await db.appPool.transaction((tx) => addJob(tx, "effect", { n: 1 }, { jobKey: "doc:1" }));
  await db.appPool.transaction((tx) => addJob(tx, "effect", { n: 2 }, { maxAttempts: 1 }));
  // A worker claims both (as get_job does: lock and count the attempt), then stops heartbeating.
  await db.query("update graphile_worker._private_jobs set locked_at = now(), locked_by = 'w-gone', attempts = attempts + 1");
  await db.query("insert into workers (id, hostname, pid, concurrency, locker_ids, started_at, heartbeat_at) values ('gone', 'h', 1, 1, '{w-gone}', now() - interval '2 minutes', now() - interval '1 minute')");
  // An edit while the first job runs: the same key again.
  await db.appPool.transaction((tx) => addJob(tx, "effect", { n: 1 }, { jobKey: "doc:1" }));
  const [old] = await db.query<{ attempts: number; max_attempts: number; key: string | null }>(
    "select attempts, max_attempts, key from graphile_worker._private_jobs where locked_by = 'w-gone' and payload->>'n' = '1'");
  t.same(old, { attempts: 25, max_attempts: 25, key: null }, "graphile-worker marked the running job exhausted and took its key");

  const result = await sweeper.sweep();
  t.match(result, { deadWorkers: 1, deadLettered: 1, completed: 1 });
  const dead = await db.query<{ payload: { n: number } }>("select payload from dead_letters");
  t.same(dead, [{ payload: { n: 2 } }], "only the job that really ran out of attempts is dead");
  const jobs = await db.query<{ key: string | null; attempts: number }>("select key, attempts from graphile_worker._private_jobs");
  t.same(jobs, [{ key: "doc:1", attempts: 0 }], "the newer job with the key is queued to do the work");
  t.same(await db.query("select * from superseded_jobs"), [], "the record of the supersession is pruned with the job");
});

t.test("while an enqueue with a job key is open, no worker can take the job with that key (its supersession is decided once)", async (t) => {
  const db = await createTestDatabase(t);
  await db.appPool.transaction((tx) => addJob(tx, "effect", { n: 1 }, { jobKey: "doc:1" }));
  await db.appPool.transaction(async (tx) => {
    // The first statement of an enqueue: whether a running job has this key is read here. A
    // worker locking the job between this and add_job would be marked exhausted by add_job with
    // no record of why, and dead-lettered after its next transient failure.
    await recordSuperseded(tx, "doc:1");
    // What a worker's fetch does: lock a free job, skipping locked ones.
    const taken = await db.query("select id from graphile_worker._private_jobs where key = 'doc:1' and locked_at is null for update skip locked");
    t.same(taken, [], "the job is held by the enqueue until it commits");
  });
  const after = await db.query("select id from graphile_worker._private_jobs where key = 'doc:1' and locked_at is null for update skip locked");
  t.equal(after.length, 1, "and free again once it has");
});
