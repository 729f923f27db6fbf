// Job history: every finished job leaves one job_history row, written in the transaction of
// its effects, and the history is pruned by dropping whole days.
import type { Job } from "graphile-worker";
import pg from "pg";
import t from "tap";
import { claimBatch } from "../../src/runtime/graphileJobs.ts";
import { Sweeper } from "../../src/liveness/sweeper.ts";
import { createTestDatabase, testLog, waitFor, type TestDatabase } from "../helpers/db.ts";
import { addJobs, createEffectsTable, queuedJobs } from "../helpers/fixtures.ts";
import { startWorker } from "../helpers/worker.ts";

interface HistoryRow {
  job_id: string;
  task: string;
  outcome: string;
  attempts: number;
  enqueued_at: Date;
  started_at: Date | null;
  finished_at: Date;
  duration_ms: number | null;
  last_error: string | null;
  result: unknown;
}

function history(db: TestDatabase): Promise<HistoryRow[]> {
  return db.query<HistoryRow>("select * from job_history_list order by job_id, finished_at");
}

t.test("each applied job leaves one history row with its timings and apply's result, with its effects", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  // Job 3's first attempt writes its effect and then fails in apply: the rolled-back
  // transaction must take its history row with it, so only the retry's row remains.
  await addJobs(db, "effect", [{ n: 1, returns: { written: 1 } }, { n: 2 }], { maxAttempts: 3 });
  await addJobs(db, "effect", [{ n: 3, applyFailTimes: 1 }], { maxAttempts: 3 });
  const [third] = await db.query<{ id: string }>("select id from graphile_worker._private_jobs where payload->>'n' = '3'");
  await waitFor("the first attempt of job 3 to fail", async () => (await db.query("select 1 from graphile_worker.jobs where attempts = 1 and locked_at is null and last_error is not null")).length === 1);
  t.same(await db.query("select * from job_history where job_id = $1", [third!.id]), [], "a failed attempt leaves no history row");
  await db.query("select graphile_worker.reschedule_jobs(array[$1::bigint], run_at := now())", [third!.id]);
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0);

  const rows = await history(db);
  t.equal(rows.length, 3, "one row per job");
  const effects = await db.query<{ job_id: string }>("select job_id::text from test_effects order by job_id");
  t.same(rows.map((row) => row.job_id), effects.map((row) => row.job_id), "a history row exactly for each committed effect");
  for (const row of rows) {
    t.equal(row.outcome, "applied");
    t.equal(row.task, "effect");
    t.ok(row.started_at !== null && row.enqueued_at <= row.started_at! && row.started_at! <= row.finished_at, "enqueued <= started <= finished");
    t.ok(row.duration_ms !== null && row.duration_ms >= 0, "a duration");
    t.equal(row.last_error, null);
  }
  t.same(rows[0]!.result, { written: 1 }, "what apply returned is kept");
  t.equal(rows[1]!.result, null, "nothing returned, no result");
  t.equal(rows[2]!.attempts, 2, "the attempts it took");
});

t.test("a claimed job's history row has the fetched job's attempts and start, whatever happened to its row meanwhile", async (t) => {
  const db = await createTestDatabase(t);
  await addJobs(db, "effect", [{ n: 1 }]);
  await db.query(`select graphile_worker.add_job('effect', '{"n": 2}', job_key := 'replaced')`);
  // As graphile-worker's fetch leaves the jobs.
  await db.query("update graphile_worker._private_jobs set locked_by = 'worker-a', locked_at = now() - interval '1 second', attempts = 1");
  const fetched = await db.query<Job>("select * from graphile_worker.jobs order by id");
  // Then, while they run: the heartbeat's refresh moves every row's lock time, and an add_job
  // with the second job's key replaces it (graphile-worker marks a running job it replaces
  // by setting its attempts to max_attempts, keeping its lock and revision).
  await db.query("update graphile_worker._private_jobs set locked_at = now() - interval '15 minutes'");
  await db.query(`select graphile_worker.add_job('effect', '{"n": 3}', job_key := 'replaced')`);
  t.same(
    (await db.query<{ attempts: number }>("select attempts from graphile_worker._private_jobs where id = $1", [fetched[1]!.id])).map((row) => row.attempts),
    [25],
    "the replaced job's row says max_attempts",
  );

  const claims = await db.appPool.transaction((tx) => claimBatch(tx, fetched, 5_000));
  t.same([...claims.values()].map((claim) => claim.claimed), [true, true], "both still claimed: they are still this holder's");
  const rows = await history(db);
  t.same(
    rows.map((row) => [row.job_id, row.outcome, row.attempts, row.enqueued_at.getTime(), row.started_at?.getTime()]),
    fetched.map((job) => [job.id, "applied", 1, new Date(job.created_at).getTime(), new Date(job.locked_at!).getTime()]),
    "attempts, enqueued_at and started_at are the fetched job's",
  );
});

t.test("a dead-lettered job's history row is written with its dead letter, with the error", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await startWorker(t, db);
  await addJobs(db, "effect", [{ n: 1, failTimes: 1, failWith: "permanent" }, { n: 2, resultBytes: 5000 }]);
  await waitFor("both jobs to leave the queue", async () => (await queuedJobs(db)) === 0);
  const rows = await history(db);
  const dead = await db.query<{ job_id: string; last_error: string }>("select job_id::text, last_error from dead_letters order by job_id");
  t.same(rows.map((row) => [row.job_id, row.outcome, row.last_error]), dead.map((row) => [row.job_id, "dead", row.last_error]));
  t.match(rows[0]!.last_error, /not valid UTF-8/);
  t.match(rows[1]!.last_error, /result of 5002 bytes as JSON \(as Postgres stores it\); the cap is 4096/, "an oversized result is a permanent failure of the task");
  t.same(await db.query("select 1 from test_effects"), [], "the oversized result's writes rolled back");
});

t.test("the sweeper's dead-lettering of an exhausted job writes its history row", async (t) => {
  const db = await createTestDatabase(t);
  await addJobs(db, "effect", [{ n: 1 }], { maxAttempts: 1 });
  // As if its worker died during the final attempt and was swept: attempts used up, unlocked.
  await db.query("update graphile_worker._private_jobs set attempts = 1, last_error = 'worker died'");
  const sweeper = new Sweeper({ pool: db.appPool, log: testLog, deadAfterMs: 1_000, intervalMs: 60_000, historyRetentionDays: 7 });
  const swept = await sweeper.sweep();
  t.equal(swept.deadLettered, 1);
  const rows = await history(db);
  t.same(rows.map((row) => [row.outcome, row.attempts, row.last_error, row.started_at]), [["dead", 1, "worker died", null]]);
});

t.test("a re-run of a job applied before is recorded as skipped and changes nothing", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  // Both kinds of task: effect has a prepare (checked before it), fan_out has none (checked by the batch's claim).
  await addJobs(db, "effect", [{ n: 1 }]);
  await addJobs(db, "fan_out", [{ n: 2, children: 0, failAfterEnqueue: false }]);
  // As if a worker committed them and died before graphile-worker recorded the completion.
  await db.query("insert into job_ledger (job_id, revision, task, outcome) select id, revision, task_identifier, 'applied' from graphile_worker.jobs");
  await startWorker(t, db);
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0);
  t.same((await history(db)).map((row) => [row.task, row.outcome]), [["effect", "skipped"], ["fan_out", "skipped"]]);
  t.same(await db.query("select 1 from test_effects"), []);
});

t.test("pruning drops whole days past the retention and keeps the coming days' partitions ready", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const day = (offset: number) => `(now() at time zone 'UTC')::date + ${offset}`;
  await db.query(`select pgconverge_job_history_partition(${day(-10)}), pgconverge_job_history_partition(${day(-7)}), pgconverge_job_history_partition(${day(-6)})`);
  const insert = (offsetDays: number) =>
    db.query(
      `insert into job_history (finished_at, job_id, revision, task, outcome, attempts, enqueued_at)
       values (now() + make_interval(days => $1), 1, 0, 'effect', 'applied', 1, now() + make_interval(days => $1))`,
      [offsetDays],
    );
  for (const offset of [-10, -7, -6, 0, -30]) await insert(offset);
  const partitions = () =>
    db.query<{ name: string }>("select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = 'job_history'::regclass order by 1");
  const before = (await partitions()).map((row) => row.name);
  t.equal(before.length, 12, "3 old days, today, 7 days ahead and the default partition");

  const [pruned] = await db.query<{ dropped: number }>("select pgconverge_prune_job_history(7) as dropped");
  t.equal(pruned!.dropped, 1, "the day that ended more than 7 days ago is dropped whole (the one of 7 days ago still holds rows younger than 7 days)");
  const [{ n } = { n: "" }] = await db.query<{ n: string }>("select count(*) as n from job_history");
  t.equal(Number(n), 3, "7 and 6 days ago and today are kept; the default partition's old row is deleted");
  const after = (await partitions()).map((row) => row.name);
  t.equal(after.length, 11);
  t.ok(after.includes("job_history_default"));

  const sweeper = new Sweeper({ pool: db.appPool, log: testLog, deadAfterMs: 1_000, intervalMs: 60_000, historyRetentionDays: 1 });
  const first = await sweeper.sweep();
  t.equal(first.historyPartitionsDropped, 2, "the sweeper prunes with its retention setting");
  const second = await sweeper.sweep();
  t.equal(second.historyPartitionsDropped, 0, "and then waits an hour before pruning again");
});

const partitionsOf = (db: TestDatabase) =>
  db.query<{ name: string }>("select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = 'job_history'::regclass order by 1");

const insertFinished = (db: TestDatabase, jobId: number, offsetDays: number) =>
  db.query(
    `insert into job_history (finished_at, job_id, revision, task, outcome, attempts, enqueued_at)
     values (now() + make_interval(days => $2), $1, 0, 'effect', 'applied', 1, now() + make_interval(days => $2))`,
    [jobId, offsetDays],
  );

t.test("after an outage, the rows the default partition caught move into their days' partitions and pruning goes on", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  // The outage: the partitions of 3 days ago and of 9 days ahead were never made (no worker ran
  // the maintenance), so the jobs that finished then went to the default partition.
  const earlier = (await db.query<{ name: string }>("select format('job_history_p%s', to_char((now() at time zone 'UTC')::date - 3, 'YYYYMMDD')) as name"))[0]!.name;
  const later = (await db.query<{ name: string }>("select format('job_history_p%s', to_char((now() at time zone 'UTC')::date + 9, 'YYYYMMDD')) as name"))[0]!.name;
  t.same(await db.query("select to_regclass($1) as r", [earlier]), [{ r: null }]);
  for (const [id, offset] of [[1, -3], [2, -3], [3, 9], [4, 0], [5, -20]] as const) await insertFinished(db, id, offset);
  t.same((await db.query("select job_id from job_history_default order by 1")).map((row) => Number(row.job_id)), [1, 2, 3, 5]);

  const [pruned] = await db.query<{ dropped: number }>("select pgconverge_prune_job_history(7, 9) as dropped");
  t.equal(pruned!.dropped, 0);
  t.same(await db.query("select job_id from job_history_default"), [], "the default partition is empty again");
  t.same((await db.query(`select job_id from ${earlier} order by 1`)).map((row) => Number(row.job_id)), [1, 2], "the rows of 3 days ago are in that day's partition");
  t.same((await db.query(`select job_id from ${later} order by 1`)).map((row) => Number(row.job_id)), [3]);
  t.same((await db.query("select job_id from job_history order by 1")).map((row) => Number(row.job_id)), [1, 2, 3, 4], "no row within the retention is lost (the one of 20 days ago is past it)");
  const names = (await partitionsOf(db)).map((row) => row.name);
  t.ok(names.includes(earlier) && names.includes(later));
  const [{ n } = { n: "" }] = await db.query<{ n: string }>("select count(*) as n from pg_indexes where tablename = $1", [earlier]);
  t.equal(Number(n), 3, "a moved-into partition has the parent's indexes");

  // With a shorter retention that day's partition ages out and is dropped like any other.
  t.equal((await db.query<{ dropped: number }>("select pgconverge_prune_job_history(2, 9) as dropped"))[0]!.dropped, 1);
  t.same((await db.query("select job_id from job_history order by 1")).map((row) => Number(row.job_id)), [3, 4]);
});

t.test("dropping an old day never keeps the jobs writing history waiting long", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  await db.query("select pgconverge_job_history_partition((now() at time zone 'UTC')::date - 10)");
  await insertFinished(db, 1, -10);
  // A long transaction holds job_history's lock the DROP needs (as a slow batch would).
  const holder = await db.pool.connect();
  t.teardown(() => holder.release());
  await holder.query("begin; insert into job_history (job_id, revision, task, outcome, attempts, enqueued_at) values (2, 0, 'effect', 'applied', 1, now())");
  const [pruned] = await db.query<{ dropped: number }>("select pgconverge_prune_job_history(7) as dropped");
  t.equal(pruned!.dropped, 0, "the day is left for the next run rather than queueing behind the transaction");
  // The hot path meanwhile: another job's history insert goes through at once.
  await insertFinished(db, 3, 0);
  await holder.query("commit");
  t.equal((await db.query<{ dropped: number }>("select pgconverge_prune_job_history(7) as dropped"))[0]!.dropped, 1, "the next run drops it");
});

t.test("making a partition does not hold up the jobs writing history", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const maker = await db.pool.connect();
  t.teardown(() => maker.release());
  // A partition made and not yet committed: its locks are held until the end of the transaction.
  await maker.query("begin; select pgconverge_job_history_partition((now() at time zone 'UTC')::date + 20)");
  const writer = await db.pool.connect();
  t.teardown(() => writer.release());
  await writer.query("set lock_timeout = '1s'");
  await writer.query(
    "insert into job_history (job_id, revision, task, outcome, attempts, enqueued_at) values (1, 0, 'effect', 'applied', 1, now())",
  );
  t.pass("a job's history insert went through while the partition was being attached");
  await maker.query("commit");
  t.equal((await db.query("select 1 from job_history")).length, 1);
});

t.test("a worker login that does not own the tables can maintain the history once granted EXECUTE; others cannot", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const role = `pgc_hist_${db.name.slice(-8)}`;
  // A password: the embedded server asks for one (scram), where a local trust server would not.
  const password = "pgc-history-test";
  await db.query(`create role ${role} login password '${password}'`);
  t.teardown(async () => {
    await db.query(`drop owned by ${role}`).catch(() => {});
    await db.query(`drop role if exists ${role}`).catch(() => {});
  });
  await db.query("select pgconverge_job_history_partition((now() at time zone 'UTC')::date - 10)");
  await insertFinished(db, 1, -10);
  const asRole = async (text: string) => {
    const url = new URL(db.url);
    url.username = role;
    url.password = password;
    const client = new pg.Client({ connectionString: url.href });
    await client.connect();
    try {
      return (await client.query(text)).rows;
    } finally {
      await client.end();
    }
  };
  await t.rejects(asRole("select pgconverge_prune_job_history(1)"), { code: "42501" }, "not executable by PUBLIC: a reader cannot empty the history");
  await db.query(`grant usage on schema public to ${role}; grant execute on function pgconverge_prune_job_history(integer, integer) to ${role}`);
  const [row] = await asRole("select pgconverge_prune_job_history(7) as dropped");
  t.equal(row!.dropped, 1, "the non-owner dropped the old day");
  t.same(await db.query("select job_id from job_history"), []);
});

t.test("one task's history is read through the (task, finished_at) index, in every partition", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  await db.query(`
    insert into job_history (finished_at, job_id, revision, task, outcome, attempts, enqueued_at)
    select now() - make_interval(secs => n), n, 0, case when n % 2000 = 0 then 'rare' else 'common' || (n % 7) end, 'applied', 1, now() - make_interval(secs => n + 1)
    from generate_series(1, 20000) n;
    analyze job_history;
  `);
  const plan = (await db.query<{ "QUERY PLAN": string }>("explain select * from job_history_list where task = 'rare' order by finished_at desc limit 50")).map((row) => row["QUERY PLAN"]).join("\n");
  t.match(plan, /task_finished_at_idx/, plan);
  const [{ missing } = { missing: "" }] = await db.query<{ missing: string }>(`
    select count(*) as missing from pg_inherits i
    where i.inhparent = 'job_history'::regclass
      and not exists (select 1 from pg_index x join pg_attribute a on a.attrelid = x.indrelid and a.attnum = x.indkey[0]
                      where x.indrelid = i.inhrelid and a.attname = 'task')
  `);
  t.equal(Number(missing), 0, "every partition, the default one included, has it");
});

t.test("every column of the history is documented", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false });
  const undocumented = await db.query(`
    select c.relname, a.attname from pg_attribute a join pg_class c on c.oid = a.attrelid
    where c.relname in ('job_history', 'job_history_list', 'job_throughput', 'dashboard_audit')
      and a.attnum > 0 and not a.attisdropped and col_description(c.oid, a.attnum) is null
  `);
  t.same(undocumented, []);
});
