// A job for a task no running worker has would wait forever without a word. It is named in
// the worker's log (once per task), in `pgconverge status` and in the metrics.
import { Writable } from "node:stream";
import { pino } from "pino";
import t from "tap";
import { Metrics } from "../../src/ops/metrics.ts";
import { createProbePool } from "../../src/ops/probePool.ts";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase, waitFor } from "../helpers/db.ts";
import { addJobs, createEffectsTable } from "../helpers/fixtures.ts";
import { parseExposition } from "../helpers/metrics.ts";
import { startWorker } from "../helpers/worker.ts";

t.test("jobs of a task no live worker has: a log line per task, status and a metric", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const lines: Array<{ msg: string; task?: string; jobs?: number }> = [];
  const log = pino(
    { level: "warn" },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    }),
  );
  const unknownLines = (task: string) => lines.filter((line) => line.task === task && /no live worker/.test(line.msg));

  // Before any worker is alive nobody could run anything: status says so through its workers, not here.
  await db.query("select graphile_worker.add_job('no_such_task', '{}')");
  const before = await runCli(["status", "--json"], { env: { DATABASE_URL: db.url } });
  t.equal(before.code, 0, before.stderr);
  t.same(JSON.parse(before.stdout).jobs.unknownTasks, [], "no live worker: not reported as unknown");

  const worker = await startWorker(t, db, { log });
  await waitFor("the log line at start", async () => unknownLines("no_such_task").length === 1);
  t.match(unknownLines("no_such_task")[0], { jobs: 1 });

  // A second unknown task appears while the worker runs: found by the sweeper's next round.
  await db.query("select graphile_worker.add_job('also_unknown', '{}'); select graphile_worker.add_job('also_unknown', '{}')");
  await waitFor("the log line for the new task", async () => unknownLines("also_unknown").length === 1);
  await addJobs(db, "effect", [{ n: 1 }]);
  await waitFor("the known task's job to run", async () => (await db.query("select 1 from test_effects")).length === 1);
  await worker.sweeper.sweep();
  await worker.sweeper.sweep();
  t.equal(unknownLines("no_such_task").length, 1, "logged once per task, not once per sweep");
  t.equal(unknownLines("also_unknown").length, 1);
  t.same(lines.filter((line) => line.task === "effect"), [], "a task the worker has is never reported");

  const status = await runCli(["status", "--json"], { env: { DATABASE_URL: db.url } });
  t.equal(status.code, 0, status.stderr);
  t.same(JSON.parse(status.stdout).jobs.unknownTasks, [
    { task: "also_unknown", count: 2 },
    { task: "no_such_task", count: 1 },
  ]);
  const human = await runCli(["status"], { env: { DATABASE_URL: db.url } });
  t.match(human.stdout, /^no live worker has task no_such_task: 1 due job waits for a worker that does$/m);
  t.match(human.stdout, /^no live worker has task also_unknown: 2 due jobs wait for a worker that does$/m);

  const pool = createProbePool(db.url, { timeoutMs: 2_000 });
  const metrics = new Metrics({ log, defaultMetrics: false, database: { pool, collection: "chunks", deadAfterMs: 30_000 } });
  t.teardown(async () => {
    metrics.close();
    await pool.end();
  });
  const samples = parseExposition(await metrics.render()).samples("pgconverge_jobs_unknown_task");
  t.same(
    Object.fromEntries(samples.map(({ labels, value }) => [labels.task, value])),
    { no_such_task: 1, also_unknown: 2 },
  );

  // Once the jobs are gone, so is the report.
  await db.query("delete from graphile_worker._private_jobs");
  t.same((await worker.sweeper.sweep()).unknownTasks, []);
});
