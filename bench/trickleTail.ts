// Where a trickle's slowest starts come from, job by job: the producer's enqueue call (its
// statement and commit) and the pickup after it returned, and when in the run each happened.
//   node --conditions=pgconverge-source --import tsx bench/trickleTail.ts [gw|pgconverge] [warm]
//   TAIL_SECONDS (10): length of the trickle, 2 jobs every 10 ms (200 jobs/s)
// "warm" runs 50 jobs through the worker before the trickle, so its first seconds show the
// trickle rather than the worker's start-up (see bench/queue.ts, trickle). The producer and the
// worker share this process's event loop, as in `npm run bench`: a busy loop delays both parts.
import { parseCronItems, run, runMigrations, type Task } from "graphile-worker";
import { performance } from "node:perf_hooks";
import { z } from "zod";
import { defineTask } from "pgconverge";
import { createLogger, graphileLogger } from "../src/log.ts";
import { benchPool, createDatabase, envNumber, percentile, sleep, startServer, waitUntil } from "./lib.ts";
import { createPgconverge, oneRowTask, PGC_TASK } from "./queue.ts";

const peer = process.argv[2] ?? "pgconverge";
if (peer !== "gw" && peer !== "pgconverge") throw new Error(`trickleTail: unknown peer "${peer}" (gw or pgconverge)`);
const warm = process.argv[3] === "warm";
const now = () => performance.timeOrigin + performance.now();
const started = new Map<number, number>();
const graphileLog = graphileLogger(createLogger("silent"));

const server = await startServer();
const database = await createDatabase(server, "tail");
const producer = benchPool(database.url, 1);
const task = peer === "gw" ? "bench" : PGC_TASK;
const enqueue = (ids: number[]) =>
  producer.query(
    `select count(*) from graphile_worker.add_jobs(array(
       select row($1::text, json_build_object('i', g), null, null, null, null, null, null)::graphile_worker.job_spec from unnest($2::int[]) g))`,
    [task, ids],
  );
let stop = async () => {};
const jobs: Array<{ id: number; enqueuedAt: number; returnedAt: number }> = [];
try {
  if (peer === "gw") {
    const pool = benchPool(database.url, 12);
    await runMigrations({ pgPool: pool, logger: graphileLog });
    const record: Task = async (payload) => void started.set((payload as { i: number }).i, now());
    const runner = await run({ pgPool: pool, concurrency: 10, taskList: { bench: record }, parsedCronItems: parseCronItems([]), logger: graphileLog, noHandleSignals: true });
    stop = async () => {
      await runner.stop();
      await pool.end();
    };
  } else {
    const recording = defineTask({
      payload: z.object({ i: z.number().int() }),
      async prepare({ payload }) {
        started.set(payload.i, now());
        return undefined;
      },
      apply: oneRowTask.apply!,
    });
    const bench = await createPgconverge(database, undefined, recording, {});
    stop = () => bench.stop();
    await bench.worker.start();
  }
  if (warm) {
    for (let i = -50; i < 0; i++) await enqueue([i]);
    await waitUntil("the warm-up jobs to start", async () => started.size >= 50, { timeoutMs: 60_000 });
  }
  await sleep(500);

  const ticks = envNumber("TAIL_SECONDS", 10) * 100;
  const begin = performance.now();
  for (let tick = 0; tick < ticks; tick++) {
    const ids = [2 * tick, 2 * tick + 1];
    const enqueuedAt = now();
    await enqueue(ids);
    const returnedAt = now();
    for (const id of ids) jobs.push({ id, enqueuedAt, returnedAt });
    const wait = begin + (tick + 1) * 10 - performance.now();
    if (wait > 0) await sleep(wait);
  }
  await waitUntil("every job to start", async () => jobs.every((job) => started.has(job.id)), { timeoutMs: 60_000 });
} finally {
  await stop();
  await producer.end();
  await database.drop();
  await server.stop();
}

const rows = jobs.map((job) => ({ at: (job.enqueuedAt - jobs[0]!.enqueuedAt) / 1000, enqueue: job.returnedAt - job.enqueuedAt, pickup: started.get(job.id)! - job.returnedAt }));
const p99 = (values: number[]) => percentile([...values].sort((a, b) => a - b), 99).toFixed(1);
console.log(
  `${peer}${warm ? " (warm)" : ""}: start p99 ${p99(rows.map((row) => row.enqueue + row.pickup))} ms; ` +
    `enqueue call p99 ${p99(rows.map((row) => row.enqueue))} ms, pickup p99 ${p99(rows.map((row) => row.pickup))} ms`,
);
const slowest = [...rows].sort((a, b) => b.enqueue + b.pickup - (a.enqueue + a.pickup)).slice(0, Math.ceil(rows.length / 100));
console.log(
  "slowest 1%, in time order (s into the trickle: enqueue call + pickup ms):",
  slowest.sort((a, b) => a.at - b.at).map((row) => `${row.at.toFixed(2)}: ${row.enqueue.toFixed(0)}+${row.pickup.toFixed(0)}`).join(", "),
);
