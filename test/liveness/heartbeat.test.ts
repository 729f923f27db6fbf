// Invariant 5: a crashed worker's job runs again within seconds; a live worker's slow job is never taken.
import t from "tap";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, queuedJobs } from "../helpers/fixtures.ts";
import { FAST_LIVENESS, spawnWorker, startWorker, waitForRegistration } from "../helpers/worker.ts";

const DEAD_AFTER_MS = Number(FAST_LIVENESS.WORKER_DEAD_AFTER_MS);
/** The job's run on the survivor; on the victim it runs until killed (FIRST_RUN_MS, within the task's 20 s deadline). */
const JOB_MS = 2_000;
const FIRST_RUN_MS = 18_000;

async function waitForLockedJob(db: Awaited<ReturnType<typeof createTestDatabase>>): Promise<string> {
  return waitFor("a worker to lock the job", async () => {
    const [job] = await db.query<{ locked_by: string | null }>("select locked_by from graphile_worker.jobs");
    return job?.locked_by ?? undefined;
  });
}

t.test("a SIGKILLed worker's in-flight job completes on another worker within the threshold plus a few seconds", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const victim = spawnWorker(t, db);
  await waitForRegistration(db, victim.child.pid!);
  // Long on the victim, so that it cannot finish the job while the survivor starts up, even on a
  // loaded machine; short on the survivor.
  await addJobs(db, "effect", [{ n: 1, firstPrepareMs: FIRST_RUN_MS, prepareMs: JOB_MS }]);
  await waitForLockedJob(db);
  const survivor = spawnWorker(t, db);
  await waitForRegistration(db, survivor.child.pid!);

  victim.child.kill("SIGKILL");
  await victim.exited;
  const killedAt = Date.now();
  await waitFor("the job to complete elsewhere", async () => (await queuedJobs(db)) === 0, { timeoutMs: DEAD_AFTER_MS + 15_000 });
  const recoveryMs = Date.now() - killedAt;
  const effects = await db.query<{ attempt: number; pid: number }>("select attempt, pid from test_effects");
  t.same(effects, [{ attempt: 2, pid: survivor.child.pid }], "applied once, by the survivor, on the second attempt");
  // Threshold + sweep interval + the job's own run, with seconds to spare on a loaded machine.
  t.ok(recoveryMs < DEAD_AFTER_MS + JOB_MS + 8_000, `completed ${recoveryMs} ms after the kill (threshold ${DEAD_AFTER_MS} ms)`);
  t.equal((await db.query("select 1 from workers where pid = $1", [victim.child.pid])).length, 0, "the dead worker was deregistered");
});

t.test("a job that runs far longer than the threshold on a live worker is never run twice", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const owner = spawnWorker(t, db);
  await waitForRegistration(db, owner.child.pid!);
  const other = spawnWorker(t, db);
  await waitForRegistration(db, other.child.pid!);
  await addJobs(db, "effect", [{ n: 1, prepareMs: 3 * DEAD_AFTER_MS }]);
  await waitFor("the job to finish", async () => (await queuedJobs(db)) === 0, { timeoutMs: 30_000 });
  const effects = await db.query<{ attempt: number }>("select attempt from test_effects");
  t.same(effects, [{ attempt: 1 }], "one effect, from the first and only attempt");
});

t.test("a frozen worker whose job was taken over cannot commit it when it wakes", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const frozen = spawnWorker(t, db);
  await waitForRegistration(db, frozen.child.pid!);
  await addJobs(db, "effect", [{ n: 1, prepareMs: 1_000 }]);
  await waitForLockedJob(db);
  // Stops heartbeating mid-job, like a worker stuck in a long GC pause or a network partition.
  frozen.child.kill("SIGSTOP");
  t.teardown(() => frozen.child.kill("SIGCONT"));
  const rescuer = spawnWorker(t, db);
  await waitForRegistration(db, rescuer.child.pid!);
  await waitFor("the rescuer to finish the job", async () => (await queuedJobs(db)) === 0, { timeoutMs: DEAD_AFTER_MS + 15_000 });
  t.same(await effectCounts(db), { rows: 1, distinct: 1 });
  // The hardest case: the job is gone and so is its applied-record, so only the lock check
  // stands between the woken worker and a second commit.
  await waitFor("the applied-record to be pruned", async () => (await db.query("select 1 from job_ledger")).length === 0);

  frozen.child.kill("SIGCONT");
  await waitForRegistration(db, frozen.child.pid!);
  // Its prepare finishes after waking; give its apply every chance to (wrongly) commit.
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  t.same(await effectCounts(db), { rows: 1, distinct: 1 }, "the woken worker did not commit a second time");
  t.equal(await queuedJobs(db), 0, "and did not resurrect the job");
  t.equal((await db.query("select 1 from dead_letters")).length, 0);
});

t.test("a worker killed during a job's final attempt: the job is dead-lettered, not stranded", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const victim = spawnWorker(t, db);
  await waitForRegistration(db, victim.child.pid!);
  await addJobs(db, "effect", [{ n: 1, prepareMs: 60_000 }], { maxAttempts: 1 });
  await waitForLockedJob(db);
  const survivor = spawnWorker(t, db);
  await waitForRegistration(db, survivor.child.pid!);
  victim.child.kill("SIGKILL");
  await waitFor("the job to leave the queue", async () => (await queuedJobs(db)) === 0, { timeoutMs: DEAD_AFTER_MS + 15_000 });
  const dead = await db.query<{ reason: string; attempts: number; payload: { n: number } }>("select reason, attempts, payload from dead_letters");
  t.same(dead, [{ reason: "exhausted", attempts: 1, payload: { n: 1, prepareMs: 60_000 } }]);
  t.same(await effectCounts(db), { rows: 0, distinct: 0 });
});

t.test("a worker killed after committing a job's final attempt: the job completes, no dead letter", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const victim = spawnWorker(t, db, { PGCONVERGE_TEST_CRASH_AFTER_COMMIT: "1" });
  await waitForRegistration(db, victim.child.pid!);
  await addJobs(db, "crash_after_commit", [{ n: 1 }], { maxAttempts: 1 });
  await victim.exited;
  spawnWorker(t, db);
  await waitFor("the job to leave the queue", async () => (await queuedJobs(db)) === 0, { timeoutMs: DEAD_AFTER_MS + 15_000 });
  t.same(await effectCounts(db), { rows: 1, distinct: 1 });
  t.same(await db.query("select * from dead_letters"), [], "its effects committed, so it is not dead");
});

t.test("a stopping worker releases any job still locked by it, so it is not stranded for hours", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const worker = await startWorker(t, db);
  const [registration] = await db.query<{ locker_ids: string[] }>("select locker_ids from workers where id = $1", [worker.id]);
  // A job this worker lost track of: locked by one of its ids, though nothing runs it (as when
  // graphile-worker could not record an outcome while the database was away).
  await addJobs(db, "effect", [{ n: 1 }]);
  await waitFor("the job to run", async () => (await effectCounts(db)).rows === 1);
  await db.query(
    `select graphile_worker.add_job('effect', json_build_object('n', 2), run_at => now() + interval '1 hour')`,
  );
  await db.query("update graphile_worker._private_jobs set locked_by = $1, locked_at = now()", [registration!.locker_ids[0]]);
  await worker.stop();
  const [job] = await db.query<{ locked_by: string | null }>("select locked_by from graphile_worker._private_jobs");
  t.equal(job?.locked_by, null, "released when the worker deregistered");
  t.equal((await db.query("select 1 from workers")).length, 0, "and deregistered");
});

t.test("the heartbeat does not wait behind job work: a worker whose application pool is exhausted still beats", async (t) => {
  const db = await createTestDatabase(t, { concurrency: 1 });
  const worker = await startWorker(t, db, { concurrency: 1 });
  // Every connection of the application pool held, as by batches stuck on a lock.
  const held: Array<() => void> = [];
  const holding = Array.from({ length: 3 }, () =>
    db.appPool.connect(() => new Promise<void>((release) => held.push(release))),
  );
  t.teardown(async () => {
    for (const release of held) release();
    await Promise.all(holding);
  });
  await waitFor("the application pool to be exhausted", async () => held.length === 3);
  const beat = async () => (await db.query<{ at: Date }>("select heartbeat_at as at from workers where id = $1", [worker.id]))[0]!.at.getTime();
  const before = await beat();
  await waitFor("another heartbeat", async () => (await beat()) > before, { timeoutMs: 3 * DEAD_AFTER_MS });
  t.pass("the worker went on proving itself alive");
});
