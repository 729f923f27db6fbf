import { loadPipelineConfig } from "../../pipeline/config.ts";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createLivenessPool } from "../../src/db/pools.ts";
import { createPipeline, type Pipeline } from "../../pipeline/services.ts";
import { loadTasks } from "../../src/runtime/loadTasks.ts";
import { Worker, type WorkerConfig } from "../../src/worker.ts";
import { testLog, waitFor, type TestDatabase } from "./db.ts";
import { FIXTURE_TASKS_DIR } from "./fixtures.ts";

const CLI = fileURLToPath(new URL("../../bin/pgconverge.js", import.meta.url));

/** Liveness settings scaled down so crash tests take seconds, not minutes. */
export const FAST_LIVENESS = {
  HEARTBEAT_INTERVAL_MS: "300",
  WORKER_DEAD_AFTER_MS: "2000",
  SWEEP_INTERVAL_MS: "300",
  POLL_INTERVAL_MS: "200",
};

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** Pipeline services for in-process workers; by default nothing answers at OLLAMA_HOST. */
export function testPipeline(env: Record<string, string> = {}): Pipeline {
  return createPipeline(loadPipelineConfig({ OLLAMA_HOST: "http://127.0.0.1:9", EMBED_DIMENSIONS: "4", ...env }));
}

/** A Worker in this process running the fixture tasks; stopped when the test ends. */
export async function startWorker(t: Teardown, db: TestDatabase, overrides: Partial<WorkerConfig> = {}): Promise<Worker> {
  const livenessPool = overrides.livenessPool ?? (await createLivenessPool(db.url, { statementTimeoutMs: 30_000 }));
  const worker = new Worker({
    queuePool: db.pool,
    appPool: db.appPool,
    livenessPool,
    log: testLog,
    tasks: await loadTasks(FIXTURE_TASKS_DIR),
    services: { pipeline: testPipeline() },
    concurrency: 4,
    taskTimeoutMs: 10_000,
    applyTimeoutMs: 10_000,
    heartbeatIntervalMs: Number(FAST_LIVENESS.HEARTBEAT_INTERVAL_MS),
    deadAfterMs: Number(FAST_LIVENESS.WORKER_DEAD_AFTER_MS),
    sweepIntervalMs: Number(FAST_LIVENESS.SWEEP_INTERVAL_MS),
    historyRetentionDays: 7,
    shutdownTimeoutMs: 2_000,
    pollIntervalMs: Number(FAST_LIVENESS.POLL_INTERVAL_MS),
    ...overrides,
  });
  t.teardown(async () => {
    await worker.stop();
    if (!overrides.livenessPool) await livenessPool.end();
  });
  await worker.start();
  return worker;
}

export interface WorkerProcess {
  child: ChildProcess;
  /** What the process printed, for failure messages. */
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A real `pgconverge worker` process on the test database, running the fixture tasks. */
export function spawnWorker(t: Teardown, db: Pick<TestDatabase, "url">, env: Record<string, string> = {}): WorkerProcess {
  const child = spawn(process.execPath, [CLI, "worker"], {
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      PGCONVERGE_TASKS_DIR: FIXTURE_TASKS_DIR,
      WORKER_CONCURRENCY: "4",
      LOG_LEVEL: "warn",
      // Many workers run at once in tests; a test that wants the metrics server sets a free port.
      METRICS_PORT: "0",
      // The project's config declares a sync, so a worker would queue its reconcile at the top of
      // every hour; tests have no Qdrant, and it would end as a dead letter in whichever test ran then.
      RECONCILE_CRON: "off",
      ...FAST_LIVENESS,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (chunk) => (output = (output + chunk).slice(-20_000)));
  child.stderr!.on("data", (chunk) => (output = (output + chunk).slice(-20_000)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal })),
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    return exited;
  });
  return { child, output: () => output, exited };
}

/** Waits until the process has registered in `workers` with its graphile-worker lock ids. */
export async function waitForRegistration(db: TestDatabase, processId: number, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    `worker pid ${processId} to register`,
    async () => (await db.query("select 1 from workers where pid = $1 and cardinality(locker_ids) > 0", [processId])).length > 0,
    { timeoutMs },
  );
}
