// `npm run bench:statements`: the statements a pgconverge worker sends per job, counted in the
// client (every pg query, slonik's included), for the one-row task over a backlog. Shows what
// a batch costs in round trips. STATEMENTS_JOBS (5000), STATEMENTS_TASK (apply | applyBatch),
// WORKER_CONCURRENCY / WORKER_LOCAL_QUEUE_SIZE / APPLY_BATCH_SIZE as for a worker (unset: the
// shipped defaults). Prints the statements per job, most frequent first.
import pg from "pg";
import { createDatabase, envNumber, sleep, startServer } from "./lib.ts";
import { createPgconverge, enqueuePgconverge, oneRowBatchTask, oneRowTask } from "./queue.ts";

const jobs = envNumber("STATEMENTS_JOBS", 5_000);
const task = process.env.STATEMENTS_TASK === "applyBatch" ? oneRowBatchTask : oneRowTask;
const env = Object.fromEntries(
  ["WORKER_CONCURRENCY", "WORKER_LOCAL_QUEUE_SIZE", "APPLY_BATCH_SIZE"].flatMap((name) => (process.env[name] ? [[name, process.env[name]!]] : [])),
);

// Counted from the worker's start until the queue is empty.
const counts = new Map<string, number>();
let counting = false;
const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  if (counting) {
    const config = args[0] as string | { text?: string };
    const text = (typeof config === "string" ? config : (config.text ?? "?")).replace(/\s+/g, " ").trim().slice(0, 72);
    counts.set(text, (counts.get(text) ?? 0) + 1);
  }
  return query.apply(this, args);
} as typeof pg.Client.prototype.query;

const server = await startServer();
try {
  const database = await createDatabase(server, "statements");
  const bench = await createPgconverge(database, undefined, task, env);
  // The drain check runs on a client of its own through the unpatched query: not counted.
  const monitor = new pg.Client({ connectionString: database.url });
  await monitor.connect();
  try {
    await enqueuePgconverge(bench.queuePool, jobs);
    counting = true;
    await bench.worker.start();
    const left = async () => ((await query.call(monitor, "select count(*)::int as left from graphile_worker._private_jobs")) as pg.QueryResult<{ left: number }>).rows[0]!.left;
    while ((await left()) > 0) await sleep(50);
    counting = false;
  } finally {
    await monitor.end();
    await bench.stop();
    await database.drop();
  }
  const total = [...counts.values()].reduce((sum, count) => sum + count, 0);
  console.log(`${task.applyBatch ? "applyBatch" : "apply"}, concurrency ${bench.concurrency}, ${JSON.stringify(env)}: ${(total / jobs).toFixed(3)} statements per job (${total} for ${jobs} jobs)`);
  for (const [text, count] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${(count / jobs).toFixed(3)}  ${String(count).padStart(6)}  ${text}`);
} finally {
  await server.stop();
}
