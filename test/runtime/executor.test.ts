import t from "tap";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, idleInTransaction, queuedJobs } from "../helpers/fixtures.ts";
import { startWorker } from "../helpers/worker.ts";

interface DeadLetter {
  job_id: string;
  task: string;
  payload: Record<string, unknown>;
  reason: string;
  attempts: number;
  max_attempts: number;
  last_error: string;
  first_failed_at: Date;
  last_failed_at: Date;
}

interface JobRow {
  id: string;
  attempts: number;
  locked_at: Date | null;
  last_error: string | null;
  delay_s: number;
}

async function theJob(db: Awaited<ReturnType<typeof createTestDatabase>>): Promise<JobRow | undefined> {
  const [job] = await db.query<JobRow>(
    "select id, attempts, locked_at, last_error, extract(epoch from run_at - updated_at)::float8 as delay_s from graphile_worker.jobs",
  );
  return job;
}

t.test("a job's effects commit once and the job leaves the queue", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  await addJobs(db, "effect", Array.from({ length: 200 }, (_, n) => ({ n })));
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0);
  t.same(await effectCounts(db), { rows: 200, distinct: 200 });
  const [ledger] = await db.query<{ applied: string }>("select count(*) filter (where outcome = 'applied') as applied from job_ledger");
  t.ok(Number(ledger!.applied) <= 200, "at most one applied-record per job (completed jobs' records are pruned)");
  t.equal((await db.query("select 1 from dead_letters")).length, 0);
});

t.test("transient errors are retried with growing delays, then the job applies once", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  await addJobs(db, "effect", [{ n: 1, failTimes: 3, failWith: "econnreset" }], { maxAttempts: 10 });
  const delays: number[] = [];
  for (let attempt = 1; attempt <= 3; attempt++) {
    const job = await waitFor(`attempt ${attempt} to fail`, async () => {
      const row = await theJob(db);
      return row && row.attempts === attempt && row.locked_at === null && row.last_error ? row : undefined;
    });
    t.match(job.last_error, /ECONNRESET/);
    delays.push(job.delay_s);
    // Skip the wait (graphile-worker's public admin function), keeping the test fast.
    await db.query("select graphile_worker.reschedule_jobs(array[$1::bigint], run_at := now())", [job.id]);
  }
  t.ok(delays[0]! > 0 && delays[1]! > delays[0]! && delays[2]! > delays[1]!, `delays grow: ${delays.map((d) => d.toFixed(1)).join(", ")} s`);
  await waitFor("the job to apply", async () => (await queuedJobs(db)) === 0);
  const effects = await db.query<{ attempt: number }>("select attempt from test_effects");
  t.same(effects, [{ attempt: 4 }], "one effect, from the fourth attempt");
  t.equal((await db.query("select 1 from dead_letters")).length, 0);
});

t.test("a re-run of a job whose writes already committed completes without running prepare again", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  // prepare fails on attempts 1 and 2: if the re-run ran it, attempt 2 would fail too.
  await addJobs(db, "effect", [{ n: 1, failTimes: 2, failWith: "econnreset" }], { maxAttempts: 10 });
  const job = await waitFor("attempt 1 to fail", async () => {
    const row = await theJob(db);
    return row && row.attempts === 1 && row.locked_at === null && row.last_error ? row : undefined;
  });
  // As if attempt 1 had committed its writes and died before completing the job.
  await db.query(
    "insert into job_ledger (job_id, revision, task, outcome) select id, revision, 'effect', 'applied' from graphile_worker.jobs where id = $1",
    [job.id],
  );
  await db.query("select graphile_worker.reschedule_jobs(array[$1::bigint], run_at := now())", [job.id]);
  const outcome = await waitFor("attempt 2 to end", async () => {
    if ((await queuedJobs(db)) === 0) return "completed";
    const row = await theJob(db);
    return row && row.attempts === 2 && row.locked_at === null ? "failed again" : undefined;
  });
  t.equal(outcome, "completed", "the ledger was asked before prepare on the re-run");
  t.same(await effectCounts(db), { rows: 0, distinct: 0 }, "nothing written twice");
});

t.test("permanent errors skip every retry and land in dead_letters with the payload and reason", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  await addJobs(db, "effect", [
    { n: 1, failTimes: 99, failWith: "permanent" },
    { n: 2, failTimes: 99, failWith: "http400" },
    { n: "not a number" },
    { n: 4 },
  ]);
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0);
  const dead = await db.query<DeadLetter>("select * from dead_letters order by payload->>'n'");
  t.equal(dead.length, 3);
  t.same(
    dead.map((row) => [row.payload.n, row.reason, row.attempts, row.task]),
    [
      [1, "permanent", 1, "effect"],
      [2, "permanent", 1, "effect"],
      ["not a number", "permanent", 1, "effect"],
    ],
  );
  t.match(dead[0]!.last_error, /PermanentError: document is not valid UTF-8/);
  t.match(dead[1]!.last_error, /vector dimension error/);
  t.match(dead[2]!.last_error, /^invalid payload: n: /);
  t.same(await effectCounts(db), { rows: 1, distinct: 1 }, "only the good job wrote an effect");
});

t.test("a job that exhausts its attempts goes to dead_letters with its last error", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  await addJobs(db, "effect", [{ n: 7, failTimes: 99, failWith: "http503" }], { maxAttempts: 2 });
  const job = await waitFor("the first attempt to fail", async () => {
    const row = await theJob(db);
    return row && row.attempts === 1 && row.locked_at === null && row.last_error ? row : undefined;
  });
  await db.query("select graphile_worker.reschedule_jobs(array[$1::bigint], run_at := now())", [job.id]);
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0);
  const [dead] = await db.query<DeadLetter>("select * from dead_letters");
  t.ok(dead);
  t.equal(dead!.reason, "exhausted");
  t.equal(dead!.attempts, 2);
  t.equal(dead!.max_attempts, 2);
  t.match(dead!.last_error, /Service Unavailable/);
  t.ok(dead!.first_failed_at < dead!.last_failed_at, "first failure is the first attempt's, not the last one's");
  t.same(await effectCounts(db), { rows: 0, distinct: 0 });
});

t.test("a prepare that ignores its deadline is abandoned: the job is retried and nothing is written", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  await addJobs(db, "hang", [{ n: 1, ms: 1_500 }], { maxAttempts: 5 });
  const job = await waitFor("the attempt to time out", async () => {
    const row = await theJob(db);
    return row && row.attempts === 1 && row.locked_at === null && row.last_error ? row : undefined;
  });
  t.match(job.last_error, /prepare exceeded its 300 ms deadline/);
  // Outlive the ignored sleep: its late result must never reach apply.
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  t.same(await effectCounts(db), { rows: 0, distinct: 0 });
  t.equal((await theJob(db))?.attempts, 1, "still queued for a retry, not dead");
});

t.test("follow-up jobs enqueued in apply exist only if apply commits", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  await addJobs(db, "fan_out", [{ n: 1, children: 3, failAfterEnqueue: true }, { n: 2, children: 3, failAfterEnqueue: false }], { maxAttempts: 1 });
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0);
  const effects = await db.query<{ n: number }>("select n from test_effects order by n");
  t.same(effects.map((row) => row.n), [2, 20, 21, 22], "the failed job's children never existed");
  const dead = await db.query<{ payload: { n: number } }>("select payload from dead_letters");
  t.same(dead.map((row) => row.payload.n), [1]);
});

t.test("after all of that, no session is idle in transaction", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  await addJobs(
    db,
    "effect",
    Array.from({ length: 60 }, (_, n) => ({ n, failTimes: n % 3, failWith: n % 2 ? "http503" : "permanent" })),
    { maxAttempts: 1 },
  );
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0);
  t.equal(await idleInTransaction(db), 0);
});
