// A running job replaced through its job_key, whose worker then dies, is not a dead letter:
// graphile-worker marks it exhausted, but the newer job with its key does its work.
import { addJob as addJobPublic, addJobs } from "pgconverge";
import t from "tap";
import { Sweeper } from "../../src/liveness/sweeper.ts";
import { recordSuperseded } from "../../src/runtime/graphileJobs.ts";
import { addJob } from "../../src/runtime/queries.ts";
import { createTestDatabase, testLog, type TestDatabase } from "../helpers/db.ts";

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

// The public enqueue is one statement for any driver: its supersession record must be written
// before add_job marks the running job, in that same statement (chaos test: an edit racing a
// running ingest left it exhausted with no record, and it was dead-lettered once its worker died).
const publicEnqueues: Array<[string, (db: TestDatabase) => Promise<void>]> = [
  ["addJob", (db) => addJobPublic(db.pool, "effect", { n: 1 }, { jobKey: "doc:1" })],
  ["addJobs", (db) => addJobs(db.pool, "effect", [{ payload: { n: 0 } }, { payload: { n: 1 }, spec: { jobKey: "doc:1" } }])],
];
for (const [name, enqueue] of publicEnqueues) {
  t.test(`the public ${name} replacing a running job records it as superseded: its dead worker's run is completed, not dead-lettered`, async (t) => {
    const db = await createTestDatabase(t);
    const sweeper = new Sweeper({ pool: db.appPool, log: testLog, deadAfterMs: 1_000, intervalMs: 60_000, historyRetentionDays: 7 });
    await enqueue(db);
    await db.query("update graphile_worker._private_jobs set locked_at = now(), locked_by = 'w-gone', attempts = attempts + 1 where key = 'doc:1'");
    await db.query("insert into workers (id, hostname, pid, concurrency, locker_ids, started_at, heartbeat_at) values ('gone', 'h', 1, 1, '{w-gone}', now() - interval '2 minutes', now() - interval '1 minute')");
    await enqueue(db);
    t.same(await db.query("select count(*)::int as n from superseded_jobs"), [{ n: 1 }], "the replaced running job is recorded");
    t.match(await sweeper.sweep(), { deadWorkers: 1, deadLettered: 0, completed: 1 });
    t.same(await db.query("select * from dead_letters"), [], "nothing is dead");
    const keyed = await db.query<{ attempts: number }>("select attempts from graphile_worker._private_jobs where key = 'doc:1'");
    t.same(keyed, [{ attempts: 0 }], "the newer job with the key is queued to do the work");
  });
}
