import { parseArgs } from "node:util";
import { ConfigError, loadConfig, type Config } from "../config.ts";
import { openDatabase } from "../db/database.ts";
import { migrate } from "../db/migrate.ts";
import { createAppPool, createQueuePool } from "../db/pools.ts";
import { createLogger, type Logger } from "../log.ts";
import { describeError } from "../runtime/errors.ts";
import { loadTasks, TaskLoadError } from "../runtime/loadTasks.ts";
import { Worker } from "../worker.ts";

const USAGE = `usage: pgconverge <command>

commands:
  worker    migrate if needed, then run jobs until SIGTERM/SIGINT
  migrate   apply graphile-worker's schema and the sql/ migrations

configuration comes from the environment; see .env.example`;

class UsageError extends Error {}

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: { help: { type: "boolean", short: "h" } },
  });
  const [command, ...rest] = positionals;
  if (values.help || command === "help") {
    console.log(USAGE);
    return 0;
  }
  if (!command) throw new UsageError("a command is required");
  if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`);
  const config = loadConfig();
  const log = createLogger(config.LOG_LEVEL);
  switch (command) {
    case "migrate":
      return runMigrate(config, log);
    case "worker":
      return runWorker(config, log);
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

async function runMigrate(config: Config, log: Logger): Promise<number> {
  const database = await openDatabase(config, log);
  const pool = createQueuePool(database.url, 1);
  try {
    const applied = await migrate(pool, log);
    log.info({ applied: applied.length }, applied.length ? "migrations applied" : "schema is up to date");
    return 0;
  } finally {
    await pool.end();
    await database.close();
  }
}

async function runWorker(config: Config, log: Logger): Promise<number> {
  const tasks = await loadTasks(config.PGCONVERGE_TASKS_DIR);
  if (tasks.size === 0) log.warn({ directory: config.PGCONVERGE_TASKS_DIR }, "no task files found; no jobs will run");
  const database = await openDatabase(config, log);
  const queuePool = createQueuePool(database.url, config.WORKER_CONCURRENCY);
  const appPool = await createAppPool(database.url, config.WORKER_CONCURRENCY, {
    statementTimeoutMs: config.APPLY_TIMEOUT_MS,
  });
  const closeAll = async () => {
    await appPool.end();
    await queuePool.end();
    await database.close();
  };
  let worker: Worker;
  try {
    await migrate(queuePool, log);
    worker = new Worker({
      queuePool,
      appPool,
      log,
      tasks,
      concurrency: config.WORKER_CONCURRENCY,
      taskTimeoutMs: config.TASK_TIMEOUT_MS,
      applyTimeoutMs: config.APPLY_TIMEOUT_MS,
      heartbeatIntervalMs: config.HEARTBEAT_INTERVAL_MS,
      deadAfterMs: config.WORKER_DEAD_AFTER_MS,
      sweepIntervalMs: config.SWEEP_INTERVAL_MS,
      shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
      pollIntervalMs: config.POLL_INTERVAL_MS,
    });
    await worker.start();
  } catch (error) {
    await closeAll();
    throw error;
  }

  const stopped = new Promise<number>((resolve) => {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        log.warn({ signal }, "second signal; exiting now (in-flight jobs are released by the sweeper)");
        process.exit(EXIT_RUNTIME);
      }
      signalled = true;
      log.info({ signal }, "shutting down: no new jobs; waiting for in-flight ones");
      void worker.stop().then(() => resolve(0));
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    worker.done.catch((error) => {
      log.error({ error: describeError(error) }, "worker failed");
      void worker.stop().then(() => resolve(EXIT_RUNTIME));
    });
  });
  const code = await stopped;
  await closeAll();
  return code;
}

function exitCodeOf(error: unknown): number {
  if (error instanceof UsageError || error instanceof ConfigError || error instanceof TaskLoadError) return EXIT_USAGE;
  if ((error as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS")) return EXIT_USAGE;
  return EXIT_RUNTIME;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const code = exitCodeOf(error);
    const line = error instanceof Error && code === EXIT_USAGE ? error.message : describeError(error);
    const hint =
      error instanceof UsageError || (error as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS")
        ? " (see pgconverge --help)"
        : "";
    console.error(`pgconverge: ${line}${hint}`);
    process.exit(code);
  },
);
