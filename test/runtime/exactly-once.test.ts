// Invariant 1: a job's writes commit exactly once, whenever its worker is killed.
import t, { type Test } from "tap";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, idleInTransaction, queuedJobs } from "../helpers/fixtures.ts";
import { SKIP_WITHOUT_PGBOUNCER, startPgBouncer } from "../helpers/pgbouncer.ts";
import { spawnWorker, waitForRegistration, type WorkerProcess } from "../helpers/worker.ts";

const DIRECT_JOBS = Number(process.env.CRASH_TEST_JOBS ?? 3_000);
/** Through the pooler the same run, shorter: the suite runs on two cores. */
const POOLED_JOBS = Number(process.env.CRASH_TEST_JOBS ?? 1_500);
const WORKERS = 3;

interface Connection {
  /** Jobs in the run. */
  jobs: number;
  /** The DATABASE_URL workers are given; the test itself reads and asserts on a direct connection. */
  workerUrl(db: TestDatabase): Promise<string>;
  /** More environment for the n-th worker spawned. */
  workerEnv(n: number, db: TestDatabase): Record<string, string>;
}

const DIRECT: Connection = { jobs: DIRECT_JOBS, workerUrl: async (db) => db.url, workerEnv: () => ({}) };

t.test("workers SIGKILLed at random moments: every job has exactly one effect and none is lost", (t) => killWorkersAtRandom(t, DIRECT));

t.test("the same through a transaction-mode PgBouncer: exactly one effect per job, none lost", { skip: SKIP_WITHOUT_PGBOUNCER }, (t) =>
  killWorkersAtRandom(t, {
    jobs: POOLED_JOBS,
    // Fewer server connections than the workers' pools would open: they queue in the pooler.
    workerUrl: async (db) => (await startPgBouncer(t, db.url, { poolSize: 10 })).urlFor(db.url),
    // One worker in three LISTENs on a direct connection; the others find jobs by polling alone.
    workerEnv: (n, db) => ({ DATABASE_POOL_MODE: "transaction", ...(n % 3 === 0 ? { DATABASE_DIRECT_URL: db.url } : {}) }),
  }),
);

async function killWorkersAtRandom(t: Test, connection: Connection): Promise<void> {
  const JOBS = connection.jobs;
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const workerUrl = await connection.workerUrl(db);
  // Jobs hold their transaction open for a few ms, so kills land before, during and after
  // commits. Half of them are applied set-based (applyBatch), half one by one.
  const payloads = Array.from({ length: JOBS }, (_, n) => ({ n, prepareMs: n % 4, applySleepMs: n % 7 }));
  await addJobs(db, "effect", payloads.filter(({ n }) => n % 2 === 0), { maxAttempts: 25 });
  await addJobs(db, "effect_batch", payloads.filter(({ n }) => n % 2 === 1), { maxAttempts: 25 });
  const workers: WorkerProcess[] = [];
  // Group commit is on (the default); every other worker also runs graphile-worker's local
  // queue with batched completions, so kills also land between a commit and its completion.
  const spawnOne = () => {
    const localQueue: Record<string, string> = workers.length % 2 === 1 ? { WORKER_LOCAL_QUEUE_SIZE: "8" } : {};
    const worker = spawnWorker(t, { url: workerUrl }, { WORKER_CONCURRENCY: "4", ...localQueue, ...connection.workerEnv(workers.length, db) });
    workers.push(worker);
    return worker;
  };
  for (let i = 0; i < WORKERS; i++) spawnOne();
  await Promise.all(workers.map((worker) => waitForRegistration(db, worker.child.pid!)));

  let kills = 0;
  const deadline = Date.now() + 240_000;
  while ((await queuedJobs(db)) > 0) {
    if (Date.now() > deadline) throw new Error(`jobs still queued after 240 s; last worker output:\n${workers.at(-1)!.output()}`);
    // A random live worker dies somewhere in the next 100-600 ms; a replacement starts.
    await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 500));
    if ((await queuedJobs(db)) === 0) break;
    const live = workers.filter((worker) => worker.child.exitCode === null && worker.child.signalCode === null);
    const victim = live[Math.floor(Math.random() * live.length)];
    if (victim && kills < 25) {
      victim.child.kill("SIGKILL");
      await victim.exited;
      kills++;
      spawnOne();
    }
  }
  t.ok(kills >= 5, `killed ${kills} workers mid-run`);
  t.same(await effectCounts(db), { rows: JOBS, distinct: JOBS }, "one effect row per job");
  t.equal((await db.query("select 1 from dead_letters")).length, 0, "no job was dead-lettered");
  const survivors = workers.filter((worker) => worker.child.exitCode === null && worker.child.signalCode === null);
  for (const worker of survivors) worker.child.kill("SIGTERM");
  const exits = await Promise.all(survivors.map((worker) => worker.exited));
  t.same(exits.map((exit) => exit.code), survivors.map(() => 0), "survivors shut down cleanly");
  t.equal(await idleInTransaction(db), 0, "no session idle in transaction");
}

t.test("a kill after the apply commit but before graphile-worker records completion does not apply the job again", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const doomed = spawnWorker(t, db, { PGCONVERGE_TEST_CRASH_AFTER_COMMIT: "1" });
  await waitForRegistration(db, doomed.child.pid!);
  await addJobs(db, "crash_after_commit", [{ n: 1 }]);
  const exit = await doomed.exited;
  t.equal(exit.signal, "SIGKILL", "the worker died right after its commit");
  t.same(await effectCounts(db), { rows: 1, distinct: 1 }, "the effect committed");
  const [stranded] = await db.query<{ attempts: number; locked_by: string | null }>("select attempts, locked_by from graphile_worker.jobs");
  t.ok(stranded?.locked_by, "graphile-worker never recorded the completion: the job is still locked");

  const rescuer = spawnWorker(t, db);
  await waitFor("the stranded job to complete", async () => (await queuedJobs(db)) === 0, { timeoutMs: 30_000 });
  t.same(await effectCounts(db), { rows: 1, distinct: 1 }, "the re-run changed nothing");
  t.equal((await db.query("select 1 from dead_letters")).length, 0);
  rescuer.child.kill("SIGTERM");
  t.equal((await rescuer.exited).code, 0);
});
