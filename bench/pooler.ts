// Pooler benchmark: pgconverge's one-row transactional task through a transaction-mode PgBouncer
// against a direct connection, in the same run on the same server, rounds alternating; and the
// server connections N in-process workers hold (pg_stat_activity, sampled during a job flood),
// direct and pooled.
//   npm run bench:pooler           (embedded Postgres; or set DATABASE_URL; needs pgbouncer)
// BENCH_POOLER_JOBS (default 5000), BENCH_POOLER_ROUNDS (2), BENCH_POOLER_POOL_SIZE (20: the
// PgBouncer's default_pool_size and max_db_connections), WORKER_CONCURRENCY (10).
import { mkdirSync, writeFileSync } from "node:fs";
import pg from "pg";
import { loadConfig } from "../src/config.ts";
import { migrate } from "../src/db/migrate.ts";
import { createAppPool, createLivenessPool, createQueuePool } from "../src/db/pools.ts";
import type { PoolMode } from "../src/db/connections.ts";
import { createLogger } from "../src/log.ts";
import { Worker, workerSettings } from "../src/worker.ts";
import { pgbouncerBinary, startPgBouncer, type PgBouncer } from "../test/helpers/pgbouncer.ts";
import { createDatabase, describeMachine, envNumber, round, startServer, waitUntil, type BenchServer } from "./lib.ts";
import { enqueuePgconverge, expectNoDeadLetters, oneRowTask, PGC_TASK } from "./queue.ts";

const log = createLogger("silent");
const MONITOR = "pgconverge-bench-monitor";
const BENCH_TABLE = "create table bench_rows (id bigint generated always as identity primary key, job text not null, created_at timestamptz not null default now())";

interface Run {
  mode: "direct" | "pooled";
  workers: number;
  jobs: number;
  seconds: number;
  jobsPerSecond: number;
  /** Most server connections (backends) of the database seen during the run, the monitor's own excluded. */
  peakServerConnections: number;
  /** Of those, the workers' direct LISTEN connections (pooled runs with a direct URL: one per worker). */
  peakListenConnections: number;
}

/** `workers` pgconverge workers (shipped defaults, in this process) drain `jobs` one-row jobs through `url`. */
async function drain(server: BenchServer, bouncer: PgBouncer | null, workers: number, jobs: number): Promise<Run> {
  const database = await createDatabase(server, bouncer ? "pooled" : "direct");
  const config = loadConfig({});
  const concurrency = config.WORKER_CONCURRENCY;
  const setup = createQueuePool(database.url, 2);
  await migrate(setup, log);
  await setup.query(BENCH_TABLE);
  await enqueuePgconverge(setup, jobs);
  await setup.end();
  const monitor = new pg.Pool({ connectionString: database.url, max: 1, application_name: MONITOR });
  monitor.on("error", () => {});
  const url = bouncer ? bouncer.urlFor(database.url) : database.url;
  const poolMode: PoolMode = bouncer ? "transaction" : "session";
  const closers: Array<() => Promise<void>> = [];
  let peak = 0;
  let peakListen = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const { rows } = await monitor.query<{ count: number; listen: number }>(
        `select count(*)::int as count, (count(*) filter (where application_name = 'pgconverge-jobs-listener'))::int as listen
         from pg_stat_activity where datname = current_database() and backend_type = 'client backend' and application_name <> $1`,
        [MONITOR],
      );
      peak = Math.max(peak, rows[0]!.count);
      peakListen = Math.max(peakListen, rows[0]!.listen);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    const fleet: Worker[] = [];
    for (let n = 0; n < workers; n++) {
      const queuePool = createQueuePool(url, concurrency);
      const appPool = await createAppPool(url, concurrency, { statementTimeoutMs: config.APPLY_TIMEOUT_MS, poolMode });
      const livenessPool = await createLivenessPool(url, { statementTimeoutMs: config.APPLY_TIMEOUT_MS, poolMode });
      const worker = new Worker({ queuePool, appPool, livenessPool, log, tasks: new Map([[PGC_TASK, oneRowTask]]), services: {}, ...workerSettings(config), poolMode, listenUrl: bouncer ? database.url : null });
      fleet.push(worker);
      closers.push(async () => {
        await worker.stop();
        await livenessPool.end();
        await appPool.end();
        await queuePool.end();
      });
    }
    const started = performance.now();
    await Promise.all(fleet.map((worker) => worker.start()));
    await waitUntil("the queue to drain", async () => (await monitor.query("select 1 from graphile_worker._private_jobs limit 1")).rowCount === 0, { timeoutMs: 600_000, intervalMs: 25 });
    const seconds = (performance.now() - started) / 1000;
    sampling = false;
    await sampler;
    await expectNoDeadLetters(monitor);
    const { rows } = await monitor.query<{ count: number }>("select count(*)::int as count from bench_rows");
    if (rows[0]!.count !== jobs) throw new Error(`bench: ${rows[0]!.count} rows for ${jobs} jobs`);
    return { mode: bouncer ? "pooled" : "direct", workers, jobs, seconds: round(seconds, 2), jobsPerSecond: round(jobs / seconds), peakServerConnections: peak, peakListenConnections: peakListen };
  } finally {
    sampling = false;
    await sampler.catch(() => {});
    for (const close of closers) await close();
    await monitor.end();
    await database.drop();
  }
}

if (pgbouncerBinary() === null) {
  console.error("bench:pooler needs pgbouncer (apt-get install pgbouncer)");
  process.exit(2);
}
const jobs = envNumber("BENCH_POOLER_JOBS", 5_000);
const rounds = envNumber("BENCH_POOLER_ROUNDS", 2);
const poolSize = envNumber("BENCH_POOLER_POOL_SIZE", 20);
const server = await startServer();
const teardowns: Array<() => unknown> = [];
try {
  const machine = await describeMachine(server);
  const bouncer = await startPgBouncer({ teardown: (fn) => teardowns.push(fn) }, server.adminUrl, { poolSize, maxDbConnections: poolSize });
  const runs: Run[] = [];
  for (let r = 0; r < rounds; r++) {
    // Alternating which goes first, so neither always runs on a warmer server.
    const order = r % 2 === 0 ? [null, bouncer] : [bouncer, null];
    for (const through of order) runs.push(await drain(server, through, 1, jobs));
  }
  for (const workers of [1, 4]) for (const through of [null, bouncer]) runs.push(await drain(server, through, workers, Math.round(jobs / 2)));
  const mean = (mode: Run["mode"]) => {
    const single = runs.slice(0, rounds * 2).filter((run) => run.mode === mode);
    return round(single.reduce((sum, run) => sum + run.jobsPerSecond, 0) / single.length);
  };
  const direct = mean("direct");
  const pooled = mean("pooled");
  const summary = { direct, pooled, ratio: round(pooled / direct, 2), poolSize, concurrency: loadConfig({}).WORKER_CONCURRENCY };
  for (const run of runs) console.log(`${run.mode.padEnd(6)} workers ${run.workers}: ${run.jobs} jobs in ${run.seconds} s = ${run.jobsPerSecond} jobs/s, peak ${run.peakServerConnections} server connections (${run.peakListenConnections} of them direct LISTEN)`);
  console.log(`one-row transactional task, 1 worker: direct ${direct} jobs/s, through PgBouncer (transaction mode, pool ${poolSize}) ${pooled} jobs/s, pooled/direct ${summary.ratio}`);
  mkdirSync("bench/results", { recursive: true });
  writeFileSync("bench/results/pooler.json", `${JSON.stringify({ machine, summary, runs }, null, 2)}\n`);
} finally {
  for (const teardown of teardowns.reverse()) await teardown();
  await server.stop();
}
