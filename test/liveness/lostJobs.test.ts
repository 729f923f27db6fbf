// Jobs locked under a live worker's lock holders that it does not run (a fetch whose reply was
// lost with its connection) are released while it lives; the jobs it holds never are.
import { sql } from "slonik";
import t from "tap";
import { createAppPool } from "../../src/db/pools.ts";
import { LostJobs } from "../../src/liveness/lostJobs.ts";
import { jobsStillLockedByStatement } from "../../src/runtime/graphileJobs.ts";
import { createTestDatabase, testLog, waitFor } from "../helpers/db.ts";
import { createEffectsTable, effectCounts } from "../helpers/fixtures.ts";
import { nodesOf, type PlanNode } from "../helpers/plans.ts";
import { startWorker } from "../helpers/worker.ts";

const lockStates = async (db: Awaited<ReturnType<typeof createTestDatabase>>) =>
  db.query<{ n: string; locked_by: string | null; attempts: number }>(
    "select payload->>'n' as n, locked_by, attempts from graphile_worker._private_jobs order by id",
  );

/** The looks' clock, moved by hand: a look reads it before its query. */
const clock = () => {
  let ms = 1_000_000;
  return { now: () => ms, pass: (by: number) => void (ms += by) };
};

t.test("a job locked under this process's holders that it never held is released after two looks at the same lock; held ones, dropped ones still locked, and others' never", async (t) => {
  const db = await createTestDatabase(t);
  await db.query("select graphile_worker.add_job('effect', json_build_object('n', n)) from generate_series(1, 4) n");
  // As a fetch does: locked, its attempt counted. 1: held (running here); 2: lost; 3: another worker's; 4: lost, then locked again.
  await db.query(`
    update graphile_worker._private_jobs
    set locked_by = case when payload->>'n' = '3' then 'w-other' else 'w-here' end, locked_at = now() - interval '1 second', attempts = 1`);
  // Looks count as two sightings only half an interval (here 30 s) apart.
  const time = clock();
  const lost = new LostJobs({ pool: db.appPool, log: testLog, lockers: () => ["w-here"], intervalMs: 60_000, now: time.now });
  const [one] = await db.query<{ id: string }>("select id::text from graphile_worker._private_jobs where payload->>'n' = '1'");
  lost.hold(Number(one!.id));

  t.equal(await lost.look(), 0, "the first look only notes what is not held");
  await db.query("update graphile_worker._private_jobs set locked_at = now() where payload->>'n' = '4'");
  time.pass(1_000);
  t.equal(await lost.look(), 0, "a look right after the last releases nothing");
  time.pass(60_000);
  t.equal(await lost.look(), 1, "the next, half an interval on, releases what both saw at the same lock time");
  t.same(await lockStates(db), [
    { n: "1", locked_by: "w-here", attempts: 1 },
    { n: "2", locked_by: null, attempts: 0 },
    { n: "3", locked_by: "w-other", attempts: 1 },
    { n: "4", locked_by: "w-here", attempts: 1 },
  ], "job 2 released with its attempt given back; the held job, the other worker's, and the one locked again kept");
  time.pass(60_000);
  t.equal(await lost.look(), 1, "job 4, seen twice at its new lock time, goes at the next look");

  // Job 1 ends here, but its completion has not been recorded yet: still held.
  lost.drop(one!.id);
  time.pass(60_000);
  t.equal(await lost.look(), 0);
  time.pass(60_000);
  t.equal(await lost.look(), 0, "a job ended but still locked (its outcome on its way) is never released");
  // Its outcome recorded (unlocked), then locked again by a fetch whose reply was lost.
  await db.query("update graphile_worker._private_jobs set locked_by = null, locked_at = null where id = $1", [one!.id]);
  time.pass(60_000);
  t.equal(await lost.look(), 0, "once a look finds it unlocked, it is forgotten");
  await db.query("update graphile_worker._private_jobs set locked_by = 'w-here', locked_at = now() where id = $1", [one!.id]);
  time.pass(60_000);
  t.equal(await lost.look(), 0);
  time.pass(60_000);
  t.equal(await lost.look(), 1, "and a lost lock on it later is released");
  t.same((await lockStates(db)).map((job) => job.locked_by), [null, null, "w-other", null]);
});

t.test("ended jobs are forgotten once found unlocked, whenever enough have gathered, not only at a look: what is kept follows the jobs in flight, not the throughput", async (t) => {
  const db = await createTestDatabase(t);
  await db.query("select graphile_worker.add_job('effect', json_build_object('n', n)) from generate_series(1, 10) n");
  await db.query("update graphile_worker._private_jobs set locked_by = 'w-here', locked_at = now(), attempts = 1");
  const ids = (await db.query<{ id: string }>("select id::text from graphile_worker._private_jobs order by id")).map((row) => row.id);
  const job = (n: number) => ids[n - 1]!;
  const time = clock();
  const lost = new LostJobs({ pool: db.appPool, log: testLog, lockers: () => ["w-here"], intervalMs: 60_000, now: time.now, forgetAfter: 2 });
  ids.forEach((id) => lost.hold(id));

  // Jobs 1 and 2 completed (deleted).
  await db.query("delete from graphile_worker._private_jobs where id = any($1::int8[])", [[job(1), job(2)]]);
  lost.drop(job(1));
  t.notOk(lost.checking, "one ended job: no check");
  lost.drop(job(2));
  t.ok(lost.checking, "the second starts a check by itself");
  await lost.forgetEnded();
  t.equal(lost.holding, 8, "both forgotten");

  // Job 3 failed (unlocked) and 4 ended, its outcome on its way; while the check that 4 starts
  // reads, 3 is fetched again and ends again: that read cannot say its new outcome is recorded.
  await db.query("update graphile_worker._private_jobs set locked_by = null, locked_at = null where id = $1", [job(3)]);
  lost.drop(job(3));
  lost.drop(job(4));
  t.ok(lost.checking);
  lost.hold(job(3));
  lost.drop(job(3));
  await lost.forgetEnded();
  t.equal(lost.holding, 8, "3, ended again after the read began, and 4, still locked, are both kept");

  // Two kept: the next check waits for four ended jobs.
  lost.drop(job(5));
  t.notOk(lost.checking, "three ended jobs, two of them kept by the last check: no check yet");
  lost.drop(job(6));
  t.ok(lost.checking, "four: a check");
  await lost.forgetEnded();
  t.equal(lost.holding, 7, "3 is forgotten now: unlocked, and ended before this read");

  // The jobs still held are never candidates, however many looks see them locked.
  time.pass(60_000);
  t.equal(await lost.look(), 0);
  time.pass(60_000);
  t.equal(await lost.look(), 0, "nothing released");
  t.same((await lockStates(db)).map((each) => each.locked_by), [null, ...Array(7).fill("w-here")], "3 unlocked; 4 to 10 keep their locks");

  await lost.stop();
  // Three kept: a check would start at six.
  for (const n of [7, 8, 9, 10]) lost.drop(job(n));
  t.notOk(lost.checking, "once stopped, ended jobs start no check");
});

t.test("a check of ended jobs probes each by its key, whatever the table's statistics say", async (t) => {
  const db = await createTestDatabase(t);
  await db.query(`
    select graphile_worker.add_jobs(array(
      select json_populate_record(null::graphile_worker.job_spec, json_build_object('identifier', 'effect', 'payload', json_build_object('n', n)))
      from generate_series(1, 20000) n))`);
  await db.query("update graphile_worker._private_jobs set locked_by = 'w-here', locked_at = now() where id % 2 = 0");
  const ended = (await db.query<{ id: string }>("select id::text from graphile_worker._private_jobs order by id limit 500")).map((row) => row.id);
  const [{ locked }] = (await db.query<{ locked: number }>("select count(*)::int as locked from graphile_worker._private_jobs where id = any($1::int8[]) and locked_by = 'w-here'", [ended])) as [{ locked: number }];
  for (const statistics of ["none (a table filled since its last analyse)", "fresh"]) {
    if (statistics === "fresh") await db.query("analyze graphile_worker._private_jobs");
    const [plan] = (await db.appPool.oneFirst(sql.unsafe`explain (analyze, format json) ${jobsStillLockedByStatement(["w-here"], ended)}`)) as Array<{ Plan: PlanNode }>;
    const scans = nodesOf(plan!.Plan).filter((node) => node["Relation Name"] === "_private_jobs");
    t.same(scans.map((node) => node["Node Type"]), ["Index Scan"], `statistics ${statistics}: an index scan, no scan of the table`);
    const rowsRead = scans.reduce((sum, node) => sum + (node["Actual Rows"] + (node["Rows Removed by Filter"] ?? 0)) * node["Actual Loops"], 0);
    t.equal(rowsRead, ended.length, "a row read per ended job, of 20,000");
    t.equal(plan!.Plan["Actual Rows"], locked, "the locked ones returned");
  }
});

t.test("the lock time is compared as an instant, whatever the session's DateStyle and TimeZone", async (t) => {
  const db = await createTestDatabase(t);
  await db.query("select graphile_worker.add_job('effect', json_build_object('n', 1))");
  await db.query("update graphile_worker._private_jobs set locked_by = 'w-here', locked_at = now()");
  await db.query("alter database " + db.name + " set datestyle = 'Postgres, DMY'");
  await db.query("alter database " + db.name + " set timezone = 'Asia/Kolkata'");
  const pool = await createAppPool(db.url, 1, { statementTimeoutMs: 10_000 });
  t.teardown(() => pool.end());
  const time = clock();
  const lost = new LostJobs({ pool, log: testLog, lockers: () => ["w-here"], intervalMs: 60_000, now: time.now });
  t.equal(await lost.look(), 0);
  time.pass(60_000);
  t.equal(await lost.look(), 1, "released");
});

t.test("a live worker releases a job locked under its holder that it is not running, and the job runs", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  // 300 ms heartbeats: a look every 9 s.
  const worker = await startWorker(t, db);
  const [registration] = await db.query<{ locker_ids: string[] }>("select locker_ids from workers where id = $1", [worker.id]);
  // A fetch whose reply was lost: locked under this worker's holder, its attempt counted, never seen by it.
  // Added due later, so that the worker cannot fetch it first; locked and due in one statement.
  await db.query(`select graphile_worker.add_job('effect', json_build_object('n', 1), run_at => now() + interval '1 hour')`);
  await db.query("update graphile_worker._private_jobs set locked_by = $1, locked_at = now(), attempts = 1, run_at = now()", [registration!.locker_ids[0]]);
  await waitFor("the lost job to be released and run", async () => (await effectCounts(db)).rows === 1, { timeoutMs: 40_000 });
  t.same(await effectCounts(db), { rows: 1, distinct: 1 });
  t.same(await db.query("select 1 from workers where id = $1", [worker.id]), [{ "?column?": 1 }], "the worker lives on");
});
