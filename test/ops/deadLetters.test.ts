import t from "tap";
import { discardDeadLetters, retryDeadLetters } from "../../src/ops/deadLetters.ts";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts } from "../helpers/fixtures.ts";
import { startWorker } from "../helpers/worker.ts";

async function count(db: TestDatabase, query: string): Promise<number> {
  const [row] = await db.query<{ count: string }>(query);
  return Number(row!.count);
}

/** Dead letters written directly, as the runtime writes them; returns their ids. */
async function insertDeadLetters(db: TestDatabase, n: number, options: { task?: string; queueName?: string; maxAttempts?: number } = {}): Promise<string[]> {
  const rows = await db.query<{ id: string }>(
    `insert into dead_letters (job_id, revision, task, queue_name, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
     select (select coalesce(max(job_id), 100000) from dead_letters) + i, 0, $2, $3, json_build_object('n', i), 'exhausted', $4, $4, 'read ECONNRESET', now(), now()
     from generate_series(1, $1) as i
     returning id`,
    [n, options.task ?? "effect", options.queueName ?? null, options.maxAttempts ?? 3],
  );
  return rows.map((row) => String(row.id));
}

t.test("dlq retry of a fixed job completes it as a new job; the ledger of the dead one does not skip it", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  await db.query("create table test_fixes (n integer primary key)");
  await startWorker(t, db);

  await addJobs(db, "needs_fix", [{ n: 7 }]);
  const [dead] = await waitFor("the dead letter", async () => {
    const rows = await db.query<{ id: string; job_id: string; reason: string; last_error: string; attempts: number }>(
      "select id, job_id, reason, last_error, attempts from dead_letters",
    );
    return rows.length === 1 ? rows : undefined;
  });
  t.match(dead, { reason: "permanent", last_error: /input 7 is broken until fixed/, attempts: 1 });
  await waitFor("the dead job to leave the queue", async () => (await count(db, "select count(*) from graphile_worker.jobs")) === 0);
  t.same(await effectCounts(db), { rows: 0, distinct: 0 }, "the failed apply wrote nothing");

  const listed = await runCli(["dlq", "list", "--json"], { env: { DATABASE_URL: db.url } });
  t.equal(listed.code, 0, listed.stderr);
  t.match(JSON.parse(listed.stdout), [{ id: String(dead!.id), task: "needs_fix", reason: "permanent", payload: { n: 7 }, attempts: 1, jobId: String(dead!.job_id) }]);

  await db.query("insert into test_fixes values (7)");
  const retried = await runCli(["dlq", "retry", String(dead!.id)], { env: { DATABASE_URL: db.url } });
  t.equal(retried.code, 0, retried.stderr);
  const match = /^dead letter (\d+) \(needs_fix\) re-enqueued as job (\d+)$/m.exec(retried.stdout);
  t.ok(match, retried.stdout);
  const newJobId = match![2]!;
  t.not(newJobId, String(dead!.job_id), "a new job id");
  t.equal(await count(db, "select count(*) from dead_letters"), 0, "the dead letter is gone");

  await waitFor("the retried job to complete", async () => (await count(db, "select count(*) from graphile_worker.jobs")) === 0 && (await effectCounts(db)).rows === 1);
  const effects = await db.query<{ job_id: string; n: number; attempt: number }>("select job_id, n, attempt from test_effects");
  t.same(effects, [{ job_id: newJobId, n: 7, attempt: 1 }], "applied once, by the new job, on its first attempt");
  t.equal(await count(db, "select count(*) from dead_letters"), 0, "and not dead again");
});

t.test("dlq retry keeps the task, payload, queue and attempt limit, with fresh attempts", async (t) => {
  const db = await createTestDatabase(t);
  const [id] = await insertDeadLetters(db, 1, { task: "fan_out", queueName: "serial", maxAttempts: 7 });
  const [retried] = await retryDeadLetters(db.appPool, { ids: [id!] });
  // graphile_worker.jobs hides payloads; its private table has them.
  const [job] = await db.query(`
    select jobs.task_identifier, private.payload, jobs.queue_name, jobs.attempts, jobs.max_attempts, jobs.run_at <= now() as due
    from graphile_worker.jobs join graphile_worker._private_jobs as private using (id)
  `);
  t.same(job, { task_identifier: "fan_out", payload: { n: 1 }, queue_name: "serial", attempts: 0, max_attempts: 7, due: true });
  t.equal(retried!.task, "fan_out");
  t.equal(retried!.deadLetterId, id);
});

t.test("dlq discard removes the dead letter and nothing else; unknown ids are one line and exit 1", async (t) => {
  const db = await createTestDatabase(t);
  const [first, second] = await insertDeadLetters(db, 2);
  const discarded = await runCli(["dlq", "discard", first!], { env: { DATABASE_URL: db.url } });
  t.equal(discarded.code, 0, discarded.stderr);
  t.equal(discarded.stdout, `dead letter ${first} discarded\n`);
  t.same((await db.query("select id from dead_letters")).map((row) => String(row.id)), [second], "only that one");
  t.equal(await count(db, "select count(*) from graphile_worker.jobs"), 0, "nothing enqueued");

  for (const args of [["dlq", "discard", first!], ["dlq", "retry", first!, "999999"]]) {
    const again = await runCli(args, { env: { DATABASE_URL: db.url } });
    t.equal(again.code, 1, args.join(" "));
    t.match(again.stderr, /^pgconverge: no dead letter .*\(never existed, or already retried or discarded\)\n$/);
  }
  const bad = await runCli(["dlq", "retry", "abc"], { env: { DATABASE_URL: db.url } });
  t.equal(bad.code, 2, "an id that is not a number is bad usage");
  t.match(bad.stderr, /^pgconverge: dlq retry: "abc" is not a dead letter id \(see pgconverge --help\)\n$/);
  for (const args of [["dlq", "retry"], ["dlq", "retry", "--all", second!], ["dlq", "discard"], ["dlq", "frob"], ["dlq", "retry", second!, "--task", "x"]]) {
    t.equal((await runCli(args, { env: { DATABASE_URL: db.url } })).code, 2, args.join(" "));
  }
  t.equal(await count(db, "select count(*) from dead_letters"), 1, "bad usage touched nothing");
});

t.test("dlq list filters by task and shows the newest first", async (t) => {
  const db = await createTestDatabase(t);
  await insertDeadLetters(db, 2, { task: "effect" });
  await insertDeadLetters(db, 1, { task: "fan_out" });
  const onlyFanOut = JSON.parse((await runCli(["dlq", "list", "--task", "fan_out", "--json"], { env: { DATABASE_URL: db.url } })).stdout);
  t.same(onlyFanOut.map((row: { task: string }) => row.task), ["fan_out"]);
  const human = await runCli(["dlq", "list"], { env: { DATABASE_URL: db.url } });
  t.equal(human.code, 0, human.stderr);
  const lines = human.stdout.trim().split("\n");
  t.match(lines[0], /^id +task +reason +attempts +dead for +last error$/);
  t.equal(lines.length, 4);
  t.match(lines[1], /^3 +fan_out +exhausted +3\/3 +\S+ +read ECONNRESET$/);
  t.equal((await runCli(["dlq", "list", "--task", "nothing"], { env: { DATABASE_URL: db.url } })).stdout, "no dead letters of task nothing\n");
});

t.test("two concurrent retries of one dead letter enqueue it once", async (t) => {
  const db = await createTestDatabase(t);
  const [id] = await insertDeadLetters(db, 1);
  const results = await Promise.all([runCli(["dlq", "retry", id!], { env: { DATABASE_URL: db.url } }), runCli(["dlq", "retry", id!], { env: { DATABASE_URL: db.url } })]);
  t.same(results.map((result) => result.code).sort(), [0, 1], "one retries it, the other finds it gone");
  t.equal(await count(db, "select count(*) from graphile_worker.jobs"), 1, "exactly one job");
  t.equal(await count(db, "select count(*) from dead_letters"), 0);
});

t.test("racing retries and discards of the same dead letters neither lose nor duplicate one", async (t) => {
  const db = await createTestDatabase(t, { concurrency: 6 });
  for (let round = 0; round < 5; round++) {
    const ids = await insertDeadLetters(db, 40);
    const jobsBefore = await count(db, "select count(*) from graphile_worker.jobs");
    // Different orders make the racers meet in the middle of the batch, not only at its start.
    const [retriedA, retriedB, discarded] = await Promise.all([
      retryDeadLetters(db.appPool, { all: true }),
      retryDeadLetters(db.appPool, { ids: [...ids].reverse() }),
      discardDeadLetters(db.appPool, ids.filter((_, index) => index % 2 === 0)),
    ]);
    const retried = [...retriedA, ...retriedB].map((row) => row.deadLetterId);
    t.equal(new Set(retried).size, retried.length, `round ${round}: no dead letter retried twice`);
    t.same(retried.filter((id) => discarded.includes(id)), [], "none both retried and discarded");
    t.same([...retried, ...discarded].sort(), [...ids].sort(), "every one retried or discarded");
    t.equal(await count(db, "select count(*) from graphile_worker.jobs") - jobsBefore, retried.length, "one job per retried dead letter");
    t.equal(await count(db, "select count(*) from dead_letters"), 0);
  }
});
