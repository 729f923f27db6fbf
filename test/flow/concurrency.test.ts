// Fleet-wide concurrency limits (sql/000005_flow_limits.sql, src/flow/): at most N jobs of a
// limited task run at once across every worker process, whatever their slots; a dead worker's
// slots come back within the dead-worker threshold; a task without a limit never queries them.
import t from "tap";
import { sql } from "slonik";
import { z } from "zod";
import { createAppPool } from "../../src/db/pools.ts";
import { defineTask, type AnyTask } from "../../src/runtime/defineTask.ts";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, queuedJobs } from "../helpers/fixtures.ts";
import { FAST_LIVENESS, spawnWorker, startWorker, waitForRegistration } from "../helpers/worker.ts";
import { FakeOllama } from "../servers/ollama.ts";

interface Teardown {
  teardown(fn: () => unknown): void;
}

const LIMIT = 4;
const DEAD_AFTER_MS = Number(FAST_LIVENESS.WORKER_DEAD_AFTER_MS);

async function startOllama(t: Teardown, embedDelayMs: number): Promise<FakeOllama> {
  const ollama = new FakeOllama();
  ollama.embedDelayMs = embedDelayMs;
  await ollama.start();
  t.teardown(() => ollama.stop());
  return ollama;
}

/** A worker process with 50 slots running the fixture tasks, flow_embed limited to LIMIT fleet-wide. */
function spawnLimitedWorker(t: Teardown, db: TestDatabase, ollama: FakeOllama) {
  return spawnWorker(t, db, { WORKER_CONCURRENCY: "50", FLOW_TASK_CONCURRENCY: `flow_embed=${LIMIT}`, OLLAMA_HOST: ollama.url });
}

async function flowStatus(db: TestDatabase) {
  return db.query<{ kind: string; name: string; max_running: number; in_use: number; waiting: number }>(
    "select kind, name, max_running, in_use, waiting from flow_status order by kind, name",
  );
}

t.test("three workers with 50 slots each never run more than 4 jobs of a task limited to 4, and every job applies once", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const ollama = await startOllama(t, 150);
  const workers = [0, 1, 2].map(() => spawnLimitedWorker(t, db, ollama));
  await Promise.all(workers.map((worker) => waitForRegistration(db, worker.child.pid!, 45_000)));
  const JOBS = 60;
  await addJobs(db, "flow_embed", Array.from({ length: JOBS }, (_, n) => ({ n })));
  await waitFor("every job to complete", async () => (await queuedJobs(db)) === 0, { timeoutMs: 45_000 });

  t.ok(ollama.maxEmbedsInFlight <= LIMIT, `Ollama saw at most ${ollama.maxEmbedsInFlight} requests at once (limit ${LIMIT})`);
  t.ok(ollama.maxEmbedsInFlight >= 2, "the jobs did run side by side (the count can see concurrency)");
  t.equal(ollama.embedCalls, JOBS, "each job called Ollama once: a job waiting for a slot calls nothing");
  t.same(await effectCounts(db), { rows: JOBS, distinct: JOBS }, "every job applied exactly once");
  t.same(await flowStatus(db), [{ kind: "task", name: "flow_embed", max_running: LIMIT, in_use: 0, waiting: 0 }], "every slot freed, nobody waiting");
  t.same(await db.query("select task, reason, attempts, last_error from dead_letters"), [], "nothing dead-lettered");
  t.equal((await db.query("select 1 from job_failures")).length, 0, "waiting for a slot is not a failure");
  t.same(workers.map((worker) => worker.child.exitCode), [null, null, null], "no worker died");
});

t.test("a SIGKILLed worker's slots come back within the dead-worker threshold, and every job still applies once", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  // Slow requests, so that the victim still holds its slots when it is killed.
  const ollama = await startOllama(t, 1_500);
  const victim = spawnLimitedWorker(t, db, ollama);
  const survivor = spawnLimitedWorker(t, db, ollama);
  await Promise.all([victim, survivor].map((worker) => waitForRegistration(db, worker.child.pid!, 45_000)));
  const JOBS = 16;
  await addJobs(db, "flow_embed", Array.from({ length: JOBS }, (_, n) => ({ n })));
  const victimSlots = async () => {
    const [row] = await db.query<{ n: string }>(
      "select count(*) as n from flow_slots where locked_by in (select unnest(locker_ids) from workers where pid = $1)",
      [victim.child.pid],
    );
    return Number(row?.n ?? 0);
  };
  // Kills the victim as soon as it holds a slot; if the survivor got all four, the victim gets
  // its turn once they are released.
  await waitFor("the victim to hold a slot", async () => (await victimSlots()) > 0, { timeoutMs: 30_000 });
  const lockers = (await db.query<{ locker_ids: string[] }>("select locker_ids from workers where pid = $1", [victim.child.pid]))[0]!.locker_ids;
  victim.child.kill("SIGKILL");
  await victim.exited;
  const killedAt = Date.now();
  await waitFor(
    "the victim's slots to be freed",
    async () => (await db.query("select 1 from flow_slots where locked_by = any($1)", [lockers])).length === 0,
    { timeoutMs: DEAD_AFTER_MS + 15_000, intervalMs: 50 },
  );
  const freedMs = Date.now() - killedAt;
  // The threshold plus a sweep interval, with seconds to spare on a loaded machine.
  t.ok(freedMs < DEAD_AFTER_MS + 5_000, `the slots were freed ${freedMs} ms after the kill (threshold ${DEAD_AFTER_MS} ms)`);
  await waitFor("every job to complete", async () => (await queuedJobs(db)) === 0, { timeoutMs: 45_000 });
  t.ok(ollama.maxEmbedsInFlight <= LIMIT, `Ollama saw at most ${ollama.maxEmbedsInFlight} requests at once (limit ${LIMIT})`);
  t.same(await effectCounts(db), { rows: JOBS, distinct: JOBS }, "every job applied exactly once");
  t.same(await flowStatus(db), [{ kind: "task", name: "flow_embed", max_running: LIMIT, in_use: 0, waiting: 0 }], "every slot freed, nobody waiting");
  t.same(await db.query("select task, reason, attempts, last_error from dead_letters"), [], "nothing dead-lettered");
});

function effectTask(flow?: { concurrency?: number; queue?: string }): AnyTask {
  return defineTask({
    payload: z.object({ n: z.number().int() }),
    ...(flow === undefined ? {} : { flow }),
    async prepare() {},
    async apply({ tx, job, payload }) {
      await tx.query(sql.unsafe`insert into test_effects (job_id, n, attempt, pid) values (${job.id}, ${payload.n}, ${job.attempts}, ${process.pid})`);
    },
  }) as AnyTask;
}

t.test("the jobs of a task without a limit send no flow-control statement, in a worker that has limited tasks too", async (t) => {
  const db = await createTestDatabase(t);
  await createEffectsTable(db);
  const statements: string[] = [];
  const appPool = await createAppPool(db.url, 4, {
    statementTimeoutMs: 30_000,
    interceptors: [{ name: "record", beforeQueryExecution: (_context, query) => (statements.push(query.sql), null) }],
  });
  t.teardown(() => appPool.end());
  const tasks = new Map([
    ["free", effectTask()],
    ["limited", effectTask({ concurrency: 2, queue: "shared" })],
  ]);
  await startWorker(t, db, { appPool, tasks, flow: { queues: { shared: 3 } } });
  t.same(await flowStatus(db), [
    { kind: "queue", name: "shared", max_running: 3, in_use: 0, waiting: 0 },
    { kind: "task", name: "limited", max_running: 2, in_use: 0, waiting: 0 },
  ], "the worker wrote its limits at start");
  const flowStatements = () => statements.filter((text) => /\bflow_/.test(text)).length;
  const before = flowStatements();

  await addJobs(db, "free", Array.from({ length: 20 }, (_, n) => ({ n })));
  await waitFor("the free jobs to complete", async () => (await queuedJobs(db)) === 0);
  t.equal(flowStatements(), before, "20 jobs of the unlimited task: no statement touched a flow table");

  await addJobs(db, "limited", Array.from({ length: 5 }, (_, n) => ({ n: 100 + n })));
  await waitFor("the limited jobs to complete", async () => (await queuedJobs(db)) === 0, { timeoutMs: 20_000 });
  t.ok(flowStatements() >= before + 10, "while each limited job took and freed its slots (what the count above would have seen)");
  t.same(await effectCounts(db), { rows: 25, distinct: 25 });
  t.same((await flowStatus(db)).map((row) => row.in_use), [0, 0], "all slots freed");
});
