// pgconverge's adapter for the public Postgres job-queue benchmark harness
// (postgresql-job-queue-benchmarking): one long-running replica that produces and works jobs and
// reports JSON lines on stdout (the harness's adapter protocol; README.md beside this file).
// The job is pgconverge's transactional task writing one row, so the comparison shows what
// exactly-once costs. Built on the public API only.
//   DATABASE_URL=... PRODUCER_RATE=500 PRODUCER_PACING=adapter npm run bench:harness
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";
import * as hdr from "hdr-histogram-js";
import pg from "pg";
import pino from "pino";
import { addJobs, defineTask, describeError, migrate, runWorker, type RunningWorker } from "pgconverge";
import { sql } from "slonik";
import { z } from "zod";

const SYSTEM = "pgconverge";
const TASK = "bench_harness_job";
/** Rolling window of the latency percentiles, s (the protocol's 30 s). */
const WINDOW_S = 30;
/** Logs go to stderr only: stdout is the harness's telemetry. */
const LOG = pino({ level: process.env.LOG_LEVEL ?? "warn", base: { adapter: SYSTEM } }, pino.destination({ fd: 2, sync: true }));

// ------------------------------------------------------------------ settings

class SettingError extends Error {}

function integer(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) throw new SettingError(`${name}: must be a whole number of at least ${min} (got ${JSON.stringify(raw)})`);
  return value;
}

function settingsOf(env: NodeJS.ProcessEnv) {
  if (!env.DATABASE_URL) throw new SettingError("DATABASE_URL: required");
  const mode = env.PRODUCER_MODE ?? "fixed";
  if (mode !== "fixed") throw new SettingError(`PRODUCER_MODE: only "fixed" is supported (got ${JSON.stringify(mode)})`);
  const pacing = env.PRODUCER_PACING ?? "harness";
  if (pacing !== "harness" && pacing !== "adapter") throw new SettingError(`PRODUCER_PACING: must be "harness" or "adapter" (got ${JSON.stringify(pacing)})`);
  return {
    databaseUrl: env.DATABASE_URL,
    pacing,
    rate: integer(env, "PRODUCER_RATE", 800, 0),
    rateFile: env.PRODUCER_RATE_CONTROL_FILE || null,
    batchMax: integer(env, "PRODUCER_BATCH_MAX", 128, 1),
    batchMs: integer(env, "PRODUCER_BATCH_MS", 25, 1),
    workers: integer(env, "WORKER_COUNT", 32, 1),
    payloadBytes: integer(env, "JOB_PAYLOAD_BYTES", 256, 0),
    workMs: integer(env, "JOB_WORK_MS", 1, 0),
    sampleEveryS: integer(env, "SAMPLE_EVERY_S", 5, 1),
    instanceId: integer(env, "BENCH_INSTANCE_ID", 0, 0),
  };
}
type Settings = ReturnType<typeof settingsOf>;

// ------------------------------------------------------------------ metrics

/** Latencies of the last WINDOW_S seconds in one HDR histogram per second: bounded memory, 3 significant digits. */
class RollingLatency {
  private readonly slots = Array.from({ length: WINDOW_S }, () => ({ second: -1, histogram: newHistogram() }));
  private readonly merged = newHistogram();

  record(ms: number): void {
    const second = Math.floor(Date.now() / 1000);
    const slot = this.slots[second % WINDOW_S]!;
    if (slot.second !== second) {
      slot.histogram.reset();
      slot.second = second;
    }
    slot.histogram.recordValue(Math.max(0, Math.round(ms * 1000))); // microseconds
  }

  /** Percentiles (ms) of the window ending now; 0 when nothing was recorded. */
  percentiles(...ps: number[]): number[] {
    const now = Math.floor(Date.now() / 1000);
    this.merged.reset();
    for (const slot of this.slots) if (slot.second > now - WINDOW_S) this.merged.add(slot.histogram);
    return ps.map((p) => (this.merged.totalCount === 0 ? 0 : this.merged.getValueAtPercentile(p) / 1000));
  }
}

function newHistogram() {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3, autoResize: true });
}

function emit(record: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

// ------------------------------------------------------------------ the replica

const Payload = z.object({ run: z.string(), seq: z.number().int().positive(), enqueued_at: z.number(), pad: z.string().optional() });

async function main(settings: Settings): Promise<void> {
  const runId = `${settings.instanceId}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const claim = new RollingLatency();
  const endToEnd = new RollingLatency();
  // Counters only go up; rates are their differences between samples.
  const counters = { enqueued: 0, completed: 0 };
  let depth = { queue: 0, running: 0, retryable: 0 };
  let stopping = false;

  /** The one-row transactional task: work in prepare (no transaction open), the row in the job's transaction, a batch per commit. */
  const job = defineTask({
    identifier: TASK,
    payload: Payload,
    async prepare({ payload, signal }) {
      claim.record(Date.now() - payload.enqueued_at);
      if (settings.workMs > 0) await sleep(settings.workMs, undefined, { signal });
    },
    async applyBatch({ tx, items }) {
      await tx.query(sql.unsafe`
        insert into bench_harness_applied (run_id, seq, enqueued_at)
        select run_id, seq, to_timestamp(enqueued_ms / 1000.0)
        from ${sql.unnest(
          items.map(({ payload }) => [payload.run, payload.seq, payload.enqueued_at]),
          ["text", "int8", "float8"],
        )} as job (run_id, seq, enqueued_ms)
      `);
      // Counted when the writes are done and the commit follows (a batch whose commit fails is
      // run again and counted again); the public API has no hook after the commit.
      const now = Date.now();
      for (const { payload } of items) endToEnd.record(now - payload.enqueued_at);
      counters.completed += items.length;
    },
  });

  const pool = new pg.Pool({ connectionString: settings.databaseUrl, max: 3 });
  // An idle client whose server connection dies (57P01, a reset) reports here; the next query reconnects.
  pool.on("error", (error) => LOG.warn({ error: describeError(error) }, "idle connection lost"));
  pool.on("connect", (client) => client.on("error", (error) => LOG.warn({ error: describeError(error) }, "connection lost")));
  // Never deletes jobs: a restarted replica continues the fleet's work.
  await retry("migrate", () => migrate({ pool, logger: LOG, app: { name: "bench_harness", directory: fileURLToPath(new URL("sql/", import.meta.url)) } }));

  emit({
    kind: "descriptor",
    system: SYSTEM,
    event_tables: ["graphile_worker._private_jobs", "public.job_ledger", "public.bench_harness_applied"],
    extensions: [],
    version: versions(),
    schema_version: await retry("schema version", () => schemaVersion(pool)),
    db_name: new URL(settings.databaseUrl).pathname.slice(1),
    started_at: new Date().toISOString(),
    instance_id: settings.instanceId,
  });

  starting = false;

  // ---- producer: each bulk enqueue is one transaction with its ledger row.
  const padding = "x".repeat(Math.max(0, settings.payloadBytes - 64));
  let seq = 0;
  async function enqueue(count: number): Promise<void> {
    const first = seq + 1;
    seq += count;
    const enqueuedAt = Date.now();
    const jobs = Array.from({ length: count }, (_, i) => ({ payload: { run: runId, seq: first + i, enqueued_at: enqueuedAt, pad: padding } }));
    let client: pg.PoolClient | null = null;
    try {
      client = await pool.connect();
      await client.query("begin");
      await client.query("insert into bench_harness_batches (run_id, first_seq, last_seq) values ($1, $2, $3)", [runId, first, seq]);
      await addJobs(client, job, jobs);
      await client.query("commit");
      counters.enqueued += count;
      client.release();
    } catch (error) {
      // These sequence numbers are given up (their ledger row did not commit, or it did and the
      // jobs with it); back off so a database that is down is not hammered.
      client?.release(error as Error);
      LOG.warn({ error: describeError(error), count }, "enqueue failed; backing off");
      await sleep(200);
    }
  }

  const produced = settings.pacing === "harness" ? produceFromStdin(settings, enqueue, () => stopping) : produceAtRate(settings, enqueue, () => stopping);

  // ---- worker, started again if it fails (its connections lost for good).
  let worker: RunningWorker | null = null;
  const working = (async () => {
    while (!stopping) {
      try {
        worker = await runWorker({ databaseUrl: settings.databaseUrl, tasks: { [TASK]: job }, concurrency: settings.workers, migrate: false, logger: LOG, shutdownTimeoutMs: 2_000 });
        if (stopping) await worker.stop();
        await worker.done;
      } catch (error) {
        LOG.warn({ error: describeError(error) }, "worker failed; starting it again");
      }
      worker = null;
      if (!stopping) await sleep(500);
    }
  })();

  // When every connection is terminated (57P01), graphile-worker's batched write of job failures
  // (batchFailJobs) can reject with no one awaiting it, which would end the process; its jobs
  // would stay locked by a worker that believes them finished. The protocol asks a replica to
  // ride out connection loss: the worker is stopped (releasing every job it holds, to be run
  // again, still exactly once) and the loop above starts a new one.
  process.on("unhandledRejection", (reason) => {
    LOG.error({ error: describeError(reason) }, "unhandled rejection in the queue; restarting the worker");
    void (worker as RunningWorker | null)?.stop().catch(() => {});
  });

  // ---- depth: the fleet's queue, from pgconverge's job_counts view; only instance 0 reports it.
  const observer = settings.instanceId === 0;
  const polling = (async () => {
    while (observer && !stopping) {
      try {
        const { rows } = await pool.query<{ pending: number; running: number; retrying: number }>(
          "select pending::int, running::int, retrying::int from job_counts where task = $1",
          [TASK],
        );
        depth = { queue: rows[0]?.pending ?? 0, running: rows[0]?.running ?? 0, retryable: rows[0]?.retrying ?? 0 };
      } catch (error) {
        LOG.warn({ error: describeError(error) }, "depth query failed");
      }
      await sleep(1_000);
    }
  })();

  // ---- sampler: aligned to the wall clock, one line per metric.
  const periodMs = settings.sampleEveryS * 1000;
  let last = { at: Date.now(), ...counters };
  // `tick` is the wall-clock boundary this sample belongs to: a timer may fire a millisecond
  // early or late, and a line stamped 05:44:57.999 is not on a 5 s boundary.
  const sample = (tick: number) => {
    const at = Date.now();
    const seconds = Math.max((at - last.at) / 1000, 0.001);
    const [p50, p95, p99] = claim.percentiles(50, 95, 99);
    const [e2e99] = endToEnd.percentiles(99);
    const metrics: Array<[string, number, number, boolean?]> = [
      ["claim_p50_ms", p50!, WINDOW_S],
      ["claim_p95_ms", p95!, WINDOW_S],
      ["claim_p99_ms", p99!, WINDOW_S],
      ["end_to_end_p99_ms", e2e99!, WINDOW_S],
      ["enqueue_rate", (counters.enqueued - last.enqueued) / seconds, settings.sampleEveryS],
      ["completion_rate", (counters.completed - last.completed) / seconds, settings.sampleEveryS],
      ["queue_depth", depth.queue, 0, true],
      ["running_depth", depth.running, 0, true],
      ["retryable_depth", depth.retryable, 0, true],
    ];
    last = { at, ...counters };
    const t = new Date(tick).toISOString();
    for (const [metric, value, window_s, global] of metrics) {
      if (global && !observer) continue;
      emit({ t, system: SYSTEM, kind: "adapter", subject_kind: "adapter", subject: "", metric, value: round3(value), window_s, instance_id: settings.instanceId });
    }
  };
  let timer: NodeJS.Timeout;
  // Each next boundary is counted from the last one, not from when the timer fired, so an early
  // timer neither stamps a line off the boundary nor samples the same boundary twice.
  const schedule = (tick: number) => {
    timer = setTimeout(() => {
      sample(tick);
      schedule(tick + periodMs);
    }, Math.max(0, tick - Date.now()));
  };
  schedule((Math.floor(Date.now() / periodMs) + 1) * periodMs);

  // ---- SIGTERM / SIGINT: stop producing, stop the worker, exit 0 within 5 s whatever happens.
  await terminated;
  stopping = true;
  setTimeout(() => process.exit(0), 4_500).unref();
  clearTimeout(timer!);
  LOG.info({ enqueued: counters.enqueued, completed: counters.completed, runId }, "stopping");
  await produced;
  await Promise.allSettled([(worker as RunningWorker | null)?.stop(), polling]);
  await working;
  await pool.end().catch(() => {});
  process.exit(0);
}

/** PRODUCER_PACING=harness: each `ENQUEUE <n>` line is one bulk enqueue; stdin is always read, even while enqueues lag or after stopping. */
async function produceFromStdin(settings: Settings, enqueue: (count: number) => Promise<void>, stopped: () => boolean): Promise<void> {
  const tokens: number[] = [];
  let wake: (() => void) | null = null;
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    const match = /^ENQUEUE (\d+)\s*$/.exec(line);
    if (!match) return void LOG.warn({ line }, "unknown line on stdin");
    if (stopped()) return;
    tokens.push(Math.min(Number(match[1]), settings.batchMax));
    wake?.();
  });
  const stop = setInterval(() => stopped() && wake?.(), 100);
  try {
    while (!stopped()) {
      const count = tokens.shift();
      if (count === undefined) await new Promise<void>((resolve) => (wake = resolve));
      else if (count > 0) await enqueue(count);
    }
  } finally {
    clearInterval(stop);
  }
}

/** PRODUCER_PACING=adapter: credit from real elapsed time, the rate re-read from PRODUCER_RATE_CONTROL_FILE every tick. */
async function produceAtRate(settings: Settings, enqueue: (count: number) => Promise<void>, stopped: () => boolean): Promise<void> {
  let lastTick = performance.now();
  let credit = 0;
  while (!stopped()) {
    const rate = readRate(settings);
    await sleep(Math.max(0, settings.batchMs - (performance.now() - lastTick)));
    const now = performance.now();
    credit = rate === 0 ? 0 : credit + (rate * (now - lastTick)) / 1000;
    lastTick = now;
    while (credit >= 1 && !stopped()) {
      const count = Math.min(Math.floor(credit), settings.batchMax);
      credit -= count;
      await enqueue(count);
    }
  }
}

function readRate(settings: Settings): number {
  if (!settings.rateFile) return settings.rate;
  try {
    const value = Number.parseFloat(readFileSync(settings.rateFile, "utf8").trim());
    return Number.isFinite(value) && value >= 0 ? value : settings.rate;
  } catch {
    return settings.rate;
  }
}

/** Retries a start-up step while the database is unreachable (a restarting Postgres), up to a minute. */
async function retry<T>(what: string, step: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      return await step();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      LOG.warn({ error: describeError(error) }, `${what} failed; retrying`);
      await sleep(500);
    }
  }
}

async function schemaVersion(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{ version: string }>("select string_agg(set || ':' || id, ',' order by set) as version from (select set, max(id) as id from migrations group by set) as sets");
  return rows[0]?.version ?? "";
}

function versions(): string {
  const read = (url: URL) => (JSON.parse(readFileSync(url, "utf8")) as { version: string }).version;
  const own = read(new URL("../../package.json", import.meta.url));
  // graphile-worker exports no package.json; its entry point is dist/index.js.
  const gw = read(new URL("../package.json", pathToFileURL(createRequire(import.meta.url).resolve("graphile-worker"))));
  return `pgconverge@${own} graphile-worker@${gw}`;
}

const round3 = (value: number) => Math.round(value * 1000) / 1000;

/** SIGTERM / SIGINT, listened for from the start: a replica stopped while it starts exits 0 too. */
const terminated = new Promise<void>((resolve) => {
  process.once("SIGTERM", resolve);
  process.once("SIGINT", resolve);
});
let starting = true;
void terminated.then(() => {
  if (starting) process.exit(0);
});

let settings: Settings;
try {
  settings = settingsOf(process.env);
} catch (error) {
  if (!(error instanceof SettingError)) throw error;
  process.stderr.write(`pgconverge-bench: ${error.message}\n`);
  process.exit(2);
}
await main(settings).catch((error: unknown) => {
  process.stderr.write(`pgconverge-bench: ${describeError(error)}\n`);
  process.exit(1);
});
