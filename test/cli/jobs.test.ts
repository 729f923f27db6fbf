// `pgconverge jobs` and `pgconverge jobs show`: queued jobs and the history, as the views hold them.
import t from "tap";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

/** Two queued jobs, one applied (with a result) and one dead, written the way the runtime writes them. */
async function seed(db: TestDatabase): Promise<{ queued: string; applied: string; dead: string }> {
  await db.query(`select graphile_worker.add_job('effect', '{"n": 1}'), graphile_worker.add_job('other', '{"n": 2}')`);
  const [queued] = await db.query<{ id: string }>("select job_id::text as id from job_list where task = 'effect'");
  // 9002 finishes after 9001 (the default finished_at is the clock at each insert).
  await db.query(`
    insert into job_history (job_id, revision, task, outcome, attempts, enqueued_at, started_at, result)
      values (9001, 0, 'effect', 'applied', 1, now() - interval '2 s', now() - interval '1 s', '{"rows": 3}');
    insert into job_history (job_id, revision, task, outcome, attempts, enqueued_at, started_at, last_error)
      values (9002, 0, 'effect', 'dead', 3, now() - interval '9 s', now() - interval '1 s', 'document is not valid UTF-8');
    insert into dead_letters (job_id, revision, task, payload, reason, attempts, max_attempts, last_error, first_failed_at, last_failed_at)
      values (9002, 0, 'effect', '{"n": 3}', 'exhausted', 3, 3, 'document is not valid UTF-8', now(), now());
  `);
  return { queued: queued!.id, applied: "9001", dead: "9002" };
}

t.test("jobs lists queued jobs, then finished ones, filtered by task and state", async (t) => {
  const db = await createTestDatabase(t);
  const ids = await seed(db);
  const env = { DATABASE_URL: db.url };
  const all = await runCli(["jobs", "--json"], { env });
  t.equal(all.code, 0, all.stderr);
  const rows = JSON.parse(all.stdout) as Array<{ jobId: string; state: string; task: string }>;
  t.same(rows.map((row) => row.state), ["pending", "pending", "dead", "applied"], "queued first, then the most recently finished");
  const dead = JSON.parse((await runCli(["jobs", "--state", "dead", "--json"], { env })).stdout) as typeof rows;
  t.same(dead.map((row) => row.jobId), [ids.dead]);
  const effect = JSON.parse((await runCli(["jobs", "--task", "effect", "--json"], { env })).stdout) as typeof rows;
  t.same(effect.map((row) => row.jobId), [ids.queued, ids.dead, ids.applied]);
  const text = await runCli(["jobs", "--task", "effect"], { env });
  t.match(text.stdout, /9002\s+effect\s+dead\s+3\s.*document is not valid UTF-8/);
});

t.test("jobs show prints a job's history, result, payload and dead letter", async (t) => {
  const db = await createTestDatabase(t);
  const ids = await seed(db);
  const env = { DATABASE_URL: db.url };
  const applied = await runCli(["jobs", "show", ids.applied], { env });
  t.equal(applied.code, 0, applied.stderr);
  t.match(applied.stdout, /applied .* after 1 attempt\(s\)/);
  t.match(applied.stdout, /result: \{"rows":3\}/);
  const dead = JSON.parse((await runCli(["jobs", "show", ids.dead, "--json"], { env })).stdout);
  t.equal(dead.history[0].outcome, "dead");
  t.same(dead.deadLetters[0].payload, { n: 3 });
  const queued = JSON.parse((await runCli(["jobs", "show", ids.queued, "--json"], { env })).stdout);
  t.same(queued.queued.payload, { n: 1 });
  t.equal(queued.queued.state, "pending");
  const missing = await runCli(["jobs", "show", "424242"], { env });
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^pgconverge: no job 424242 .*\n$/);
});

t.test("bad jobs usage is one line, exit code 2", async (t) => {
  for (const args of [["jobs", "--state", "lost"], ["jobs", "show"], ["jobs", "show", "x"], ["jobs", "--dead"], ["jobs", "frob"]]) {
    const result = await runCli(args, { env: { DATABASE_URL: "postgres://127.0.0.1:1/none" } });
    t.equal(result.code, 2, args.join(" "));
    t.match(result.stderr, /^pgconverge: [^\n]+\n$/, args.join(" "));
  }
});
