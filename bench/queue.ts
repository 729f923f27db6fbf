// Queue benchmarks: graphile-worker (no-op with defaults, no-op with its local queue and batched
// completion, a per-job transaction writing one row), pg-boss with the same one-row work, and
// pgconverge's transactional task writing one row. Each scenario gets a fresh database; jobs
// are enqueued in bulk first, then timed from worker start to the last completion recorded in
// the database. Trickle scenarios measure enqueue-to-start latency at a steady rate.
import { parseCronItems, run, runMigrations, type Runner, type Task } from "graphile-worker";
import pg from "pg";
import { PgBoss, type Job } from "pg-boss";
import { createRequire } from "node:module";
import { sql, type DatabasePool } from "slonik";
import { z } from "zod";
import { loadConfig } from "../src/config.ts";
import { migrate } from "../src/db/migrate.ts";
import { createAppPool, createLivenessPool, createQueuePool } from "../src/db/pools.ts";
import { createLogger, graphileLogger } from "../src/log.ts";
import { createPipeline } from "../pipeline/services.ts";
import { loadPipelineConfig } from "../pipeline/config.ts";
import { defineTask, type DefinedTask } from "pgconverge";
import { runtimeEvents } from "../src/runtime/events.ts";
import { Worker, workerSettings } from "../src/worker.ts";
import { benchPool, createDatabase, envNumber, percentile, round, sleep, waitUntil, type BenchDatabase, type BenchServer } from "./lib.ts";

const log = createLogger("silent");

/**
 * pgconverge's tuned scenarios (the numerator of tx_vs_gw_noop_localqueue): many job slots
 * (they mostly wait on shared commits, and hold no connection while they wait), graphile-worker's
 * local queue, and batches of up to 128 jobs (about 100 form at this concurrency; per-batch work,
 * from slonik's statements to the commit's WAL flush, is then shared by that many).
 * BENCH_TUNED_CONCURRENCY and BENCH_TUNED_BATCH override them.
 */
export const TUNED_CONCURRENCY = envNumber("BENCH_TUNED_CONCURRENCY", 400);
export const TUNED_ENV = { WORKER_LOCAL_QUEUE_SIZE: "500", APPLY_BATCH_SIZE: String(envNumber("BENCH_TUNED_BATCH", 128)) };
const graphileLog = graphileLogger(log);

export interface ThroughputResult {
  jobs: number;
  concurrency: number;
  /** From the worker's start to the drain. */
  seconds: number;
  jobsPerSecond: number;
  /** From the moment a tenth of the backlog was done to the drain: the worker warm (see Progress). */
  warm: { jobs: number; seconds: number; jobsPerSecond: number };
  /** How the peer was configured, in words. */
  settings: string;
}

export interface LatencyResult {
  /** Jobs measured (the warm-up's not included). */
  jobs: number;
  /** Jobs enqueued per second, as achieved. */
  rate: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The first second's jobs, from a worker just started: the same trickle, not in the figures above. */
  warmUp: { jobs: number; p99Ms: number; maxMs: number };
  settings: string;
}

export interface QueueOptions {
  jobs: number;
  concurrency: number;
}

/**
 * Called around a throughput scenario's timed window: `started` just before the worker starts
 * (jobs enqueued), `finished` as soon as the queue is drained, before the worker stops. Used by
 * bench/scenario.ts to take the server's statistics over exactly that window.
 */
export interface WindowObserver {
  started(database: BenchDatabase): Promise<void>;
  finished(): Promise<void>;
}

export interface TrickleOptions {
  concurrency: number;
  rate: number;
  /** Seconds measured, after a second of warm-up at the same rate. */
  seconds: number;
}

/** Share of a throughput scenario's backlog done before its warm window starts (see Progress). */
const WARM_AFTER = 0.1;

/**
 * Jobs done so far in a throughput scenario, to time the run without the worker's first tenth
 * of the backlog: that part includes the worker's start (pgconverge's pools open their
 * connections, and each new server session reads the catalog, as it does in graphile-worker's
 * first fetch) and code not yet optimised by V8. With 20,000 jobs a peer drains in one to two
 * seconds, so start-up is a large share of the whole window. Each peer counts where its own
 * code sees a job's work done, which is not quite the same point: graphile-worker's task
 * returning (its completion is batched after), pg-boss's handler returning (pg-boss commits its
 * transaction after), pgconverge's batch committing. The differences are a batch's round trip,
 * milliseconds against a window of about a second. The window ends at the drain, found by polling.
 */
class Progress {
  private done = 0;
  private warmFrom: { at: number; done: number } | null = null;

  private readonly total: number;

  constructor(total: number) {
    this.total = total;
  }

  add(count: number): void {
    this.done += count;
    if (this.warmFrom === null && this.done >= this.total * WARM_AFTER) this.warmFrom = { at: performance.now(), done: this.done };
  }

  /** The warm window, ending at `drainedAt` (performance.now() when the queue was found empty). */
  warm(drainedAt: number): ThroughputResult["warm"] {
    if (this.warmFrom === null) throw new Error(`bench: ${this.done} of ${this.total} jobs counted done at the drain`);
    const jobs = this.total - this.warmFrom.done;
    const seconds = (drainedAt - this.warmFrom.at) / 1000;
    return { jobs, seconds: round(seconds, 2), jobsPerSecond: Math.round(jobs / seconds) };
  }
}

/**
 * Gathers the statistics of a queue table just filled by the bench. Without them the planner
 * estimates a handful of rows, and graphile-worker's fetch (the same for pgconverge) reads and
 * sorts the whole backlog instead of the first rows of its index: 57 ms per fetch of 500 jobs
 * at 60,000 queued (EXPLAIN ANALYZE), against a few ms. A queue in use has statistics
 * (autovacuum's analyze); a bench that enqueues and starts at once would be measuring the planner's guess.
 */
async function analyze(pool: pg.Pool, table: string): Promise<void> {
  await pool.query(`analyze ${table}`);
}

/** Seconds of a trickle before its measured window (see trickle). */
const TRICKLE_WARM_UP_SECONDS = 1;

/** When each of a trickle's jobs was enqueued and how long after that its task started. */
class TrickleStarts {
  readonly starts: Array<{ enqueuedAt: number; latencyMs: number }> = [];

  /** Called by the peer's task as its first line of code, with the time the payload carries. */
  record(enqueuedAt: number): void {
    this.starts.push({ enqueuedAt, latencyMs: now() - enqueuedAt });
  }
}

/** The one row every transactional scenario writes per job. */
const BENCH_TABLE = "create table bench_rows (id bigint generated always as identity primary key, job text not null, created_at timestamptz not null default now())";
const GW_TASK = "bench";
/** graphile-worker's own recommendation for high throughput (its performance page's preset). */
const GW_BATCHING = { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 };
const PGBOSS_QUEUE = "bench";
const PGBOSS_VERSION = (createRequire(import.meta.url)("pg-boss/package.json") as { version: string }).version;
const now = () => performance.timeOrigin + performance.now();

/** Enqueues `count` graphile-worker jobs of `task` whose payload carries the time they were enqueued. */
async function enqueueStamped(producer: pg.Pool, task: string, count: number): Promise<void> {
  await producer.query(
    `select count(*) from graphile_worker.add_jobs(array(
       select row($1::text, json_build_object('enqueuedAt', $2::float8), null, null, null, null, null, null)::graphile_worker.job_spec
       from generate_series(1, $3::int)))`,
    [task, now(), count],
  );
}

// ---------------------------------------------------------------- graphile-worker

async function enqueueGraphile(pool: pg.Pool, jobs: number, payloadSql = "json_build_object('i', g)"): Promise<void> {
  for (let first = 1; first <= jobs; first += 5_000) {
    await pool.query(
      `select count(*) from graphile_worker.add_jobs(array(
         select row($1::text, ${payloadSql}, null, null, null, null, null, null)::graphile_worker.job_spec
         from generate_series($2::int, $3::int) g))`,
      [GW_TASK, first, Math.min(jobs, first + 4_999)],
    );
  }
}

/**
 * Waits until graphile-worker's job table is empty. The emptiness check is an index-free
 * `exists` (cheap enough to poll every 25 ms without stealing the peers' CPU); the scan for a
 * failed job's error runs once a second, so a benchmark never hides failures.
 */
async function untilGraphileDrained(monitor: pg.Pool, peer: string): Promise<void> {
  let lastErrorCheck = performance.now();
  await waitUntil(`${peer} to finish`, async () => {
    const { rows } = await monitor.query<{ drained: boolean }>("select not exists (select from graphile_worker._private_jobs) as drained");
    if (rows[0]!.drained) return true;
    if (performance.now() - lastErrorCheck < 1_000) return false;
    lastErrorCheck = performance.now();
    const failed = await monitor.query<{ error: string }>(
      "select last_error as error from graphile_worker._private_jobs where last_error is not null limit 1",
    );
    if (failed.rows[0]) throw new Error(`bench: a ${peer} job failed: ${failed.rows[0].error.split("\n", 1)[0]}`);
    return false;
  });
}

async function expectRows(monitor: pg.Pool, expected: number, peer: string): Promise<void> {
  const { rows } = await monitor.query<{ count: number }>("select count(*)::int as count from bench_rows");
  if (rows[0]!.count !== expected) throw new Error(`bench: ${peer} wrote ${rows[0]!.count} rows for ${expected} jobs`);
}

type GraphileKind = "noop" | "noop-localqueue" | "tx";

export async function graphileThroughput(server: BenchServer, kind: GraphileKind, options: QueueOptions, observer?: WindowObserver): Promise<ThroughputResult> {
  const database = await createDatabase(server, `gw_${kind.replace("-", "_")}`);
  const pool = benchPool(database.url, options.concurrency + 2);
  const monitor = benchPool(database.url, 1);
  let runner: Runner | null = null;
  try {
    await runMigrations({ pgPool: pool, logger: graphileLog });
    await pool.query(BENCH_TABLE);
    await enqueueGraphile(pool, options.jobs);
    await analyze(pool, "graphile_worker._private_jobs");
    await observer?.started(database);
    const progress = new Progress(options.jobs);
    const noop: Task = async () => progress.add(1);
    const oneRow: Task = async (_payload, helpers) => {
      await helpers.withPgClient(async (client) => {
        await client.query("begin");
        try {
          await client.query("insert into bench_rows (job) values ($1)", [helpers.job.id]);
          await client.query("commit");
        } catch (error) {
          await client.query("rollback").catch(() => {});
          throw error;
        }
      });
      progress.add(1);
    };
    const started = performance.now();
    runner = await run({
      pgPool: pool,
      concurrency: options.concurrency,
      taskList: { [GW_TASK]: kind === "tx" ? oneRow : noop },
      parsedCronItems: parseCronItems([]),
      logger: graphileLog,
      noHandleSignals: true,
      ...(kind === "noop-localqueue" ? { preset: { worker: GW_BATCHING } } : {}),
    });
    await untilGraphileDrained(monitor, `graphile-worker (${kind})`);
    const drainedAt = performance.now();
    const seconds = (drainedAt - started) / 1000;
    await observer?.finished();
    await runner.stop();
    runner = null;
    if (kind === "tx") await expectRows(monitor, options.jobs, "graphile-worker");
    return {
      jobs: options.jobs,
      concurrency: options.concurrency,
      seconds: round(seconds, 2),
      jobsPerSecond: Math.round(options.jobs / seconds),
      warm: progress.warm(drainedAt),
      settings:
        kind === "noop"
          ? "run() defaults, no-op task"
          : kind === "noop-localqueue"
            ? "no-op task, localQueue.size 500, completeJobBatchDelay 0, failJobBatchDelay 0"
            : "run() defaults; task: withPgClient → begin; insert one row; commit",
    };
  } finally {
    await runner?.stop().catch(() => {});
    await monitor.end();
    await pool.end();
    await database.drop();
  }
}

/** Enqueue-to-start latency of graphile-worker with defaults, for jobs added one tick at a time. */
export async function graphileTrickle(server: BenchServer, options: TrickleOptions): Promise<LatencyResult> {
  const database = await createDatabase(server, "gw_trickle");
  const pool = benchPool(database.url, options.concurrency + 2);
  const producer = benchPool(database.url, 1);
  let runner: Runner | null = null;
  try {
    await runMigrations({ pgPool: pool, logger: graphileLog });
    const starts = new TrickleStarts();
    const record: Task = async (payload) => {
      starts.record((payload as { enqueuedAt: number }).enqueuedAt);
    };
    runner = await run({
      pgPool: pool,
      concurrency: options.concurrency,
      taskList: { [GW_TASK]: record },
      parsedCronItems: parseCronItems([]),
      logger: graphileLog,
      noHandleSignals: true,
    });
    const result = await trickle(options, starts, async (count) => {
      await enqueueStamped(producer, GW_TASK, count);
    });
    return { ...result, settings: "run() defaults (LISTEN/NOTIFY), no-op task" };
  } finally {
    await runner?.stop().catch(() => {});
    await producer.end();
    await pool.end();
    await database.drop();
  }
}

/**
 * Adds `rate` jobs per second (a batch every 10 ms) for a second of warm-up and then for
 * `seconds`, and waits until every job has reported its start. Only the jobs enqueued after the
 * warm-up are measured: a worker's first jobs after it starts pay once for what a running worker
 * has already done (code compiled by V8, new server sessions reading the catalog for each table
 * they touch), which is the start-up, not the trickle; the warm-up's figures are reported apart.
 */
async function trickle(
  options: TrickleOptions,
  recorded: TrickleStarts,
  enqueue: (count: number) => Promise<void>,
): Promise<Omit<LatencyResult, "settings">> {
  await sleep(500); // let the worker settle (LISTEN connections, first poll)
  const perTick = Math.max(1, Math.round(options.rate / 100));
  const warmUpTicks = TRICKLE_WARM_UP_SECONDS * 100;
  const ticks = warmUpTicks + options.seconds * 100;
  const started = performance.now();
  let measuredFrom = Infinity;
  for (let tick = 0; tick < ticks; tick++) {
    if (tick === warmUpTicks) measuredFrom = now();
    await enqueue(perTick);
    const wait = started + (tick + 1) * 10 - performance.now();
    if (wait > 0) await sleep(wait);
  }
  const elapsed = (now() - measuredFrom) / 1000;
  const total = perTick * ticks;
  await waitUntil("trickle jobs to start", async () => recorded.starts.length >= total, { timeoutMs: 60_000 });
  const sortedLatencies = (warmUp: boolean) =>
    recorded.starts.filter((start) => (start.enqueuedAt < measuredFrom) === warmUp).map((start) => start.latencyMs).sort((a, b) => a - b);
  const measured = sortedLatencies(false);
  const warmUp = sortedLatencies(true);
  return {
    jobs: measured.length,
    rate: Math.round(measured.length / elapsed),
    p50Ms: round(percentile(measured, 50), 1),
    p99Ms: round(percentile(measured, 99), 1),
    maxMs: round(measured.at(-1)!, 1),
    warmUp: { jobs: warmUp.length, p99Ms: round(percentile(warmUp, 99), 1), maxMs: round(warmUp.at(-1)!, 1) },
  };
}

// ---------------------------------------------------------------- pg-boss

interface PgBossBench {
  boss: PgBoss;
  work: pg.Pool;
  errors: unknown[];
}

/**
 * pg-boss 12 with LISTEN/NOTIFY on (`useListenNotify` and a `notify` queue: it polls
 * otherwise), its own pool sized for `concurrency` handlers holding a transaction each plus its
 * fetches, and a pool for the per-job scenario's own transactions.
 */
async function startPgBoss(database: BenchDatabase, concurrency: number): Promise<PgBossBench> {
  const boss = new PgBoss({ connectionString: database.url, max: concurrency + 4, schedule: false, useListenNotify: true });
  const errors: unknown[] = [];
  boss.on("error", (error) => errors.push(error));
  await boss.start();
  await boss.createQueue(PGBOSS_QUEUE, { notify: true });
  const work = benchPool(database.url, concurrency);
  await work.query(BENCH_TABLE);
  return { boss, work, errors };
}

async function insertOneRow(pool: pg.Pool, job: string): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("begin");
    await client.query("insert into bench_rows (job) values ($1)", [job]);
    await client.query("commit");
  } catch (error) {
    await client.query("rollback").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

/**
 * How pg-boss runs the one-row work:
 * - "transactional": pg-boss 12's transactional batch worker, its closest design to group
 *   commit: `concurrency` handlers (localConcurrency), each given up to `batchSize` jobs and a
 *   transaction in which pg-boss also completes them; the handler inserts the batch's rows with
 *   one statement (as pgconverge's applyBatch does). burstWhenBatchFull fetches again at once
 *   while batches come back full, instead of waiting out the polling interval.
 * - "per-job": the same `concurrency` x `batchSize` fetches, each job in a transaction of its
 *   own on another connection and the batch completed afterwards (what the bench compared
 *   with before pg-boss had transactional workers; not exactly-once).
 */
type PgBossMode = "transactional" | "per-job";

async function workPgBoss(
  bench: PgBossBench,
  mode: PgBossMode,
  options: { concurrency: number; batchSize: number },
  onJob: (job: Job<unknown>) => void,
  onDone: (count: number) => void = () => {},
): Promise<void> {
  const polling = { batchSize: options.batchSize, localConcurrency: options.concurrency, pollingIntervalSeconds: 0.5, burstWhenBatchFull: true };
  if (mode === "transactional") {
    await bench.boss.work(PGBOSS_QUEUE, { ...polling, transactional: true }, async (jobs, tx) => {
      for (const job of jobs) onJob(job);
      await tx.executeSql("insert into bench_rows (job) select unnest($1::text[])", [jobs.map((job) => job.id)]);
      onDone(jobs.length);
    });
  } else {
    await bench.boss.work(PGBOSS_QUEUE, polling, async (jobs) => {
      for (const job of jobs) {
        onJob(job);
        await insertOneRow(bench.work, job.id);
        onDone(1);
      }
    });
  }
}

async function stopPgBoss(bench: PgBossBench): Promise<void> {
  await bench.boss.stop({ graceful: true, close: true, timeout: 10_000 });
  await bench.work.end();
}

async function pgBossRemaining(monitor: pg.Pool): Promise<number> {
  const { rows } = await monitor.query<{ remaining: number; failed: number }>(
    `select count(*) filter (where state in ('created', 'retry', 'active'))::int as remaining,
            count(*) filter (where state = 'failed')::int as failed
     from pgboss.job where name = $1`,
    [PGBOSS_QUEUE],
  );
  if (rows[0]!.failed > 0) throw new Error(`bench: ${rows[0]!.failed} pg-boss jobs failed`);
  return rows[0]!.remaining;
}

const PGBOSS_SETTINGS: Record<PgBossMode, string> = {
  transactional: "work({ transactional: true, batchSize, localConcurrency, burstWhenBatchFull }); one insert of the batch's rows in pg-boss's transaction, which also completes the jobs",
  "per-job": "work({ batchSize, localConcurrency, burstWhenBatchFull }); each job: begin; insert one row; commit; then pg-boss completes the batch",
};

export async function pgBossThroughput(server: BenchServer, mode: PgBossMode, options: QueueOptions & { batchSize: number }): Promise<ThroughputResult> {
  const database = await createDatabase(server, "pgboss");
  const monitor = benchPool(database.url, 1);
  let bench: PgBossBench | null = null;
  try {
    bench = await startPgBoss(database, options.concurrency);
    for (let first = 0; first < options.jobs; first += 5_000) {
      const count = Math.min(5_000, options.jobs - first);
      await bench.boss.insert(PGBOSS_QUEUE, Array.from({ length: count }, (_, i) => ({ data: { i: first + i } })));
    }
    await analyze(bench.work, "pgboss.job");
    const progress = new Progress(options.jobs);
    const started = performance.now();
    await workPgBoss(bench, mode, options, () => {}, (count) => progress.add(count));
    await waitUntil("pg-boss to finish", async () => (await pgBossRemaining(monitor)) === 0);
    const drainedAt = performance.now();
    const seconds = (drainedAt - started) / 1000;
    if (bench.errors.length > 0) throw new Error(`bench: pg-boss reported ${bench.errors.length} errors, first: ${String(bench.errors[0])}`);
    await stopPgBoss(bench);
    bench = null;
    await expectRows(monitor, options.jobs, "pg-boss");
    return {
      jobs: options.jobs,
      concurrency: options.concurrency,
      seconds: round(seconds, 2),
      jobsPerSecond: Math.round(options.jobs / seconds),
      warm: progress.warm(drainedAt),
      settings: `pg-boss ${PGBOSS_VERSION}, localConcurrency ${options.concurrency}, batchSize ${options.batchSize}: ${PGBOSS_SETTINGS[mode]}`,
    };
  } finally {
    if (bench) await stopPgBoss(bench).catch(() => {});
    await monitor.end();
    await database.drop();
  }
}

export async function pgBossTrickle(server: BenchServer, options: TrickleOptions & { batchSize: number }): Promise<LatencyResult> {
  const database = await createDatabase(server, "pgboss_trickle");
  let bench: PgBossBench | null = null;
  try {
    bench = await startPgBoss(database, options.concurrency);
    const starts = new TrickleStarts();
    await workPgBoss(bench, "transactional", options, (job) => {
      starts.record((job.data as { enqueuedAt: number }).enqueuedAt);
    });
    const boss = bench.boss;
    const result = await trickle(options, starts, async (count) => {
      const enqueuedAt = now();
      await boss.insert(PGBOSS_QUEUE, Array.from({ length: count }, () => ({ data: { enqueuedAt } })));
    });
    return { ...result, settings: `pg-boss ${PGBOSS_VERSION} transactional worker, localConcurrency ${options.concurrency}, batchSize ${options.batchSize}, LISTEN/NOTIFY (useListenNotify, notify queue)` };
  } finally {
    if (bench) await stopPgBoss(bench).catch(() => {});
    await database.drop();
  }
}

// ---------------------------------------------------------------- pgconverge

export const PGC_TASK = "bench_tx";

const BenchPayload = z.object({ i: z.number().int().optional(), enqueuedAt: z.number().optional() });

/** pgconverge's transactional task writing one row (apply only: no external I/O). */
export const oneRowTask = defineTask({
  payload: BenchPayload,
  async apply({ tx, job }) {
    await tx.query(sql.unsafe`insert into bench_rows (job) values (${job.id})`);
  },
});

/** The same row per job, written set-based: one insert for the jobs of a batch. */
export const oneRowBatchTask = defineTask({
  payload: BenchPayload,
  async applyBatch({ tx, items }) {
    await tx.query(sql.unsafe`
      insert into bench_rows (job) select * from ${sql.unnest(items.map((item) => [item.job.id]), ["text"])}
    `);
  },
});

export interface PgconvergeBench {
  worker: Worker;
  /** Job slots of the worker (the shipped default unless the scenario gave one). */
  concurrency: number;
  queuePool: pg.Pool;
  appPool: DatabasePool;
  stop(): Promise<void>;
}

/**
 * A migrated database with the bench table, and a pgconverge Worker on it with the shipped
 * defaults (loadConfig's) and `env` over them; concurrency is the shipped default
 * (WORKER_CONCURRENCY's) unless given. The worker is created, not started.
 */
export async function createPgconverge(
  database: BenchDatabase,
  concurrencyOverride: number | undefined,
  task: DefinedTask<any, any> = oneRowTask,
  env: Record<string, string> = {},
): Promise<PgconvergeBench> {
  const config = loadConfig({ OLLAMA_HOST: "http://127.0.0.1:9", ...env });
  const concurrency = concurrencyOverride ?? config.WORKER_CONCURRENCY;
  const queuePool = createQueuePool(database.url, concurrency);
  await migrate(queuePool, log);
  await queuePool.query(BENCH_TABLE);
  const appPool = await createAppPool(database.url, concurrency, { statementTimeoutMs: config.APPLY_TIMEOUT_MS });
  const livenessPool = await createLivenessPool(database.url, { statementTimeoutMs: config.APPLY_TIMEOUT_MS });
  const worker = new Worker({
    queuePool,
    appPool,
    livenessPool,
    log,
    tasks: new Map([[PGC_TASK, task]]),
    services: { pipeline: createPipeline(loadPipelineConfig({ OLLAMA_HOST: "http://127.0.0.1:9", ...env })) },
    ...workerSettings(config),
    concurrency,
  });
  return {
    worker,
    concurrency,
    queuePool,
    appPool,
    stop: async () => {
      await worker.stop();
      await livenessPool.end();
      await appPool.end();
      await queuePool.end();
    },
  };
}

export async function enqueuePgconverge(pool: pg.Pool, jobs: number, firstIndex = 1): Promise<void> {
  for (let first = firstIndex; first < firstIndex + jobs; first += 5_000) {
    await pool.query(
      `select count(*) from graphile_worker.add_jobs(array(
         select row($1::text, json_build_object('i', g), null, null, null, null, null, null)::graphile_worker.job_spec
         from generate_series($2::int, $3::int) g))`,
      [PGC_TASK, first, Math.min(firstIndex + jobs - 1, first + 4_999)],
    );
  }
}

export async function expectNoDeadLetters(monitor: pg.Pool): Promise<void> {
  const { rows } = await monitor.query<{ count: number; error: string | null }>(
    "select count(*)::int as count, max(last_error) as error from dead_letters",
  );
  if (rows[0]!.count > 0) throw new Error(`bench: ${rows[0]!.count} pgconverge jobs dead-lettered: ${rows[0]!.error}`);
}

/** `concurrency` unset: the shipped default (WORKER_CONCURRENCY's), as a user gets it. */
export async function pgconvergeThroughput(
  server: BenchServer,
  options: { jobs: number; concurrency?: number },
  env: Record<string, string> = {},
  task: DefinedTask<any, any> = oneRowTask,
  observer?: WindowObserver,
): Promise<ThroughputResult> {
  const database = await createDatabase(server, "pgc_tx");
  const monitor = benchPool(database.url, 1);
  let bench: PgconvergeBench | null = null;
  let onCommitted: ((batch: { applied: number }) => void) | null = null;
  try {
    bench = await createPgconverge(database, options.concurrency, task, env);
    await enqueuePgconverge(bench.queuePool, options.jobs);
    await analyze(bench.queuePool, "graphile_worker._private_jobs");
    await observer?.started(database);
    const progress = new Progress(options.jobs);
    onCommitted = ({ applied }) => progress.add(applied);
    runtimeEvents.on("batch:committed", onCommitted);
    const started = performance.now();
    await bench.worker.start();
    await untilGraphileDrained(monitor, "pgconverge");
    const drainedAt = performance.now();
    const seconds = (drainedAt - started) / 1000;
    await observer?.finished();
    const { concurrency } = bench;
    await bench.stop();
    bench = null;
    await expectNoDeadLetters(monitor);
    await expectRows(monitor, options.jobs, "pgconverge");
    return {
      jobs: options.jobs,
      concurrency,
      seconds: round(seconds, 2),
      jobsPerSecond: Math.round(options.jobs / seconds),
      warm: progress.warm(drainedAt),
      settings: `Worker with loadConfig defaults${Object.keys(env).length ? ` and ${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(" ")}` : ""}; ${task.applyBatch ? "applyBatch inserts one row per job, one statement per batch" : "apply inserts one row"} (ledger, lock check, group commit)`,
    };
  } finally {
    if (onCommitted) runtimeEvents.off("batch:committed", onCommitted);
    await bench?.stop().catch(() => {});
    await monitor.end();
    await database.drop();
  }
}

/** At the shipped defaults (concurrency included): `options.concurrency` is the peers'. */
export async function pgconvergeTrickle(server: BenchServer, options: TrickleOptions, env: Record<string, string> = {}): Promise<LatencyResult> {
  const database = await createDatabase(server, "pgc_trickle");
  const producer = benchPool(database.url, 1);
  const starts = new TrickleStarts();
  // Start = the first task code to run (prepare), before the apply transaction.
  const recording = defineTask({
    payload: BenchPayload,
    async prepare({ payload }) {
      starts.record(payload.enqueuedAt!);
      return undefined;
    },
    apply: oneRowTask.apply!,
  });
  let bench: PgconvergeBench | null = null;
  try {
    bench = await createPgconverge(database, undefined, recording, env);
    await bench.worker.start();
    const result = await trickle(options, starts, async (count) => {
      await enqueueStamped(producer, PGC_TASK, count);
    });
    return { ...result, settings: "Worker with loadConfig defaults (LISTEN/NOTIFY); start = prepare of a one-row tx task" };
  } finally {
    await bench?.stop().catch(() => {});
    await producer.end();
    await database.drop();
  }
}
