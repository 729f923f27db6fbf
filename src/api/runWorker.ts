import type { CronItem } from "graphile-worker";
import pg from "pg";
import type { DatabasePool } from "slonik";
import { z } from "zod";
import { ConfigError, CoreShape, type Config } from "../config.ts";
import { checkPoolMode, migrationUrlOf, sessionUrlOf, type DatabaseConnections } from "../db/connections.ts";
import type { AppMigrations } from "../db/migrate.ts";
import { retryLostOutcomes } from "../db/outcomeRetry.ts";
import { createAppPool, createLivenessPool, createQueuePool } from "../db/pools.ts";
import type { WorkerFlowOptions } from "../flow/options.ts";
import { createLogger, type Logger } from "../log.ts";
import { migrate } from "./migrate.ts";
import { isDefinedTask, TASK_IDENTIFIER, type AnyTask, type ServicesOf } from "../runtime/defineTask.ts";
import { loadTasks, TaskLoadError } from "../runtime/loadTasks.ts";
import type { Relay } from "../outbox/relay.ts";
import type { SyncDefinition } from "../outbox/sync.ts";
import { Worker } from "../worker.ts";
import { serviceFlowOf, type ServiceFlowOptions } from "../flow/serviceSettings.ts";
import { createReconcileTask, createSyncRelay, pointWritesOf, qdrantClientOf, RECONCILE_TASK, reconcileCronItems, syncsOf, urlOfPool, type QdrantOptions, type RelayOptions } from "./syncs.ts";

/**
 * The worker's settings, the same ones `pgconverge worker` reads from the environment (named
 * in each comment), with the same defaults and bounds.
 */
export interface WorkerSettings {
  /** Jobs run at once (WORKER_CONCURRENCY). Default 100; the pools open a connection per slot only up to 10 each. */
  concurrency?: number;
  /** Deadline of a task's prepare, ms (TASK_TIMEOUT_MS). Default 60 s; on expiry its AbortSignal fires and the job is retried. */
  taskTimeoutMs?: number;
  /** statement_timeout in the apply transaction, ms (APPLY_TIMEOUT_MS). Default 30 s, so a stuck apply cannot hold locks forever. */
  applyTimeoutMs?: number;
  /** Fallback poll for due jobs, ms (POLL_INTERVAL_MS). Default 2 s; new jobs arrive by LISTEN/NOTIFY at once. */
  pollIntervalMs?: number;
  /** Most jobs whose applies share one commit (APPLY_BATCH_SIZE). Default 64; 1 commits each job alone. */
  applyBatchSize?: number;
  /** Jobs fetched per query and handed out locally, completions batched (WORKER_LOCAL_QUEUE_SIZE). Default 100; 1 fetches one job per query. */
  localQueueSize?: number;
  /** How often the worker records that it is alive, ms (HEARTBEAT_INTERVAL_MS). Default 2 s. */
  heartbeatIntervalMs?: number;
  /**
   * A worker silent for this long is dead and its jobs are released, ms (WORKER_DEAD_AFTER_MS).
   * Default 15 s; at least 3 x heartbeatIntervalMs, so one missed beat does not kill a live worker.
   */
  deadAfterMs?: number;
  /** How often the worker looks for dead workers and exhausted jobs, ms (SWEEP_INTERVAL_MS). Default 2 s. */
  sweepIntervalMs?: number;
  /** Days of job history kept (JOB_HISTORY_RETENTION_DAYS). Default 7; older days are dropped whole, hourly. */
  historyRetentionDays?: number;
  /** On stop(), how long in-flight jobs may finish before they are aborted and released, ms (SHUTDOWN_TIMEOUT_MS). Default 15 s. */
  shutdownTimeoutMs?: number;
}

/** Each setting's environment variable: one schema gives both the CLI and runWorker their defaults and bounds. */
const SETTING_VARIABLES = {
  concurrency: "WORKER_CONCURRENCY",
  taskTimeoutMs: "TASK_TIMEOUT_MS",
  applyTimeoutMs: "APPLY_TIMEOUT_MS",
  pollIntervalMs: "POLL_INTERVAL_MS",
  applyBatchSize: "APPLY_BATCH_SIZE",
  localQueueSize: "WORKER_LOCAL_QUEUE_SIZE",
  heartbeatIntervalMs: "HEARTBEAT_INTERVAL_MS",
  deadAfterMs: "WORKER_DEAD_AFTER_MS",
  sweepIntervalMs: "SWEEP_INTERVAL_MS",
  historyRetentionDays: "JOB_HISTORY_RETENTION_DAYS",
  shutdownTimeoutMs: "SHUTDOWN_TIMEOUT_MS",
} as const satisfies Record<keyof WorkerSettings, keyof Config>;

type SettingName = keyof typeof SETTING_VARIABLES;
const SettingsSchema = CoreShape.pick(Object.fromEntries(Object.values(SETTING_VARIABLES).map((name) => [name, true])) as { [K in (typeof SETTING_VARIABLES)[SettingName]]: true });

/** Validates the settings and fills in the defaults; a bad one is a ConfigError naming it. */
export function workerSettingsOf(options: WorkerSettings): Required<WorkerSettings> {
  const names = Object.keys(SETTING_VARIABLES) as SettingName[];
  const given = Object.fromEntries(names.filter((name) => options[name] !== undefined).map((name) => [SETTING_VARIABLES[name], options[name]]));
  const parsed = SettingsSchema.safeParse(given);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = names.find((key) => SETTING_VARIABLES[key] === issue.path[0]) ?? String(issue.path[0]);
    throw new ConfigError(`${name}: ${issue.message} (got ${JSON.stringify(options[name as SettingName])})`);
  }
  const settings = Object.fromEntries(names.map((name) => [name, parsed.data[SETTING_VARIABLES[name]]])) as Required<WorkerSettings>;
  if (settings.deadAfterMs < 3 * settings.heartbeatIntervalMs) {
    throw new ConfigError(`deadAfterMs: must be at least 3 x heartbeatIntervalMs, or a live worker that misses one beat is declared dead (got ${settings.deadAfterMs})`);
  }
  return settings;
}

/** The CLI's environment settings as runWorker options. */
export function workerSettingsFromConfig(config: Config): Required<WorkerSettings> {
  return Object.fromEntries(Object.entries(SETTING_VARIABLES).map(([name, variable]) => [name, config[variable]])) as Required<WorkerSettings>;
}

/** Tasks by identifier. */
export type TaskRecord = Record<string, AnyTask>;

type UnionToIntersection<U> = (U extends unknown ? (value: U) => void : never) extends (value: infer I) => void ? I : never;

/** The services that every task of the record needs, together. */
export type ServicesFor<Tasks extends TaskRecord> = UnionToIntersection<ServicesOf<Tasks[keyof Tasks]>>;

/** `services` is required exactly when some task needs one. */
type ServicesOption<Tasks extends TaskRecord> = Record<never, never> extends ServicesFor<Tasks>
  ? { services?: ServicesFor<Tasks> }
  : { services: ServicesFor<Tasks> };

export type RunWorkerOptions<Tasks extends TaskRecord = TaskRecord> = WorkerSettings &
  ServicesOption<Tasks> & {
    /**
     * The Postgres to run on (a postgres:// URL). Give this or `pool`. The worker opens its own
     * connections from it: a pool for the queue and pools for the task transactions and the
     * heartbeat, sized from `concurrency`, all closed by stop().
     */
    databaseUrl?: string;
    /**
     * An application's `pg` Pool instead of `databaseUrl`: the queue runs on it (it is not ended by
     * stop()), and the task transactions on pools opened with the same connection settings.
     * Give it at least concurrency + 2 connections (pg's default max is 10).
     */
    pool?: pg.Pool;
    /**
     * How `databaseUrl` (or `pool`) keeps sessions (DATABASE_POOL_MODE): "session" (default) for a
     * direct connection or a session-mode pooler; "transaction" for a transaction-mode pooler
     * (PgBouncer pool_mode=transaction, most managed poolers). In transaction mode nothing
     * relies on session state through it (README, Production). Left at "session" in front of a
     * transaction-mode pooler, runWorker rejects with a ConfigError saying so.
     */
    databasePoolMode?: "session" | "transaction";
    /**
     * With databasePoolMode "transaction": a direct (session) connection to the same database
     * (DATABASE_DIRECT_URL) for LISTEN, so new jobs and outbox changes start at once, and for
     * migrations. Default none: jobs and changes are found by polling (pollIntervalMs, relay.pollIntervalMs).
     */
    databaseDirectUrl?: string;
    /**
     * The tasks to run, by identifier (`{ send_email: sendEmail }`), or a directory of task files
     * (one default-exported defineTask per file, named after its identifier). Only with a record
     * are the services checked at compile time.
     */
    tasks: Tasks | string;
    /** A pino logger. Default: JSON lines on stdout at level "info". */
    logger?: Logger;
    /** Apply pgconverge's schema first (migrate()), under an advisory lock. Default true. */
    migrate?: boolean;
    /** The application's own migrations, applied after pgconverge's when `migrate` is on (as migrate()'s `app`). Default: none. */
    appMigrations?: AppMigrations;
    /**
     * Outbox syncs (tables mirrored into Qdrant collections, each declared with defineSync)
     * that this worker relays beside its jobs: their collections are created (or checked) at
     * start, changes written with enqueueSync reach Qdrant, and stop() stops the relay too.
     * Default none. Needs `qdrant`. Any number of workers may relay the same syncs.
     */
    syncs?: readonly SyncDefinition[];
    /** Where Qdrant is; required with `syncs`. */
    qdrant?: QdrantOptions;
    /** The relay's batch size, poll, lease and backoff; defaults as the CLI's RELAY_* variables. */
    relay?: RelayOptions;
    /**
     * When this worker reconciles `syncs` with Qdrant and queues repairs (graphile-worker cron
     * syntax, e.g. "0 * * * *" hourly; one run per tick however many workers run it). Default
     * none (false): the CLI's RECONCILE_CRON defaults to hourly, a library should not start
     * work that was not asked for.
     */
    reconcileCron?: string | false;
    /**
     * Flow control for the whole fleet. Concurrency: limits over what the tasks declare with
     * defineTask's `flow`, `concurrency` by task (FLOW_TASK_CONCURRENCY), `queues` the sizes of
     * the named limits tasks join with flow.queue (FLOW_QUEUE_CONCURRENCY); written to the
     * database at start, the latest worker to start wins (a change is logged as a warning).
     * External services: rate limits of the services tasks call with `ctx.callService`
     * (`services: { ollama: { rate: 20 } }`), and the circuit breaker's settings. Default: the
     * tasks' own limits, no rate limits, breaker at 5 failures and 30 s.
     */
    flow?: WorkerFlowOptions & ServiceFlowOptions;
  };

/** A running worker, as runWorker returns it. */
export interface RunningWorker {
  /** This worker's id, as recorded in the `workers` table. */
  readonly id: string;
  /**
   * Settles when the worker has stopped: resolves after stop(), rejects on a fatal failure; with a
   * BreakingMigrationError (exitCode 57, and process.exitCode set to it, as graphile-worker does)
   * when graphile-worker's schema had a breaking migration: restart on the new version.
   */
  readonly done: Promise<void>;
  /**
   * Stops claiming jobs, lets in-flight jobs finish for shutdownTimeoutMs, aborts and releases the
   * rest, deregisters and closes the connections it opened. Idempotent.
   */
  stop(): Promise<void>;
}

/** What the CLI adds to a worker beyond the public options (its relay and reconcile cron share these). */
export interface WorkerExtras {
  appPool?: DatabasePool;
  /** The CLI has checked the pool mode against the server already (openDatabase). */
  poolModeChecked?: boolean;
  cronItems?: CronItem[];
  extraTasks?: Map<string, AnyTask>;
}

async function tasksOf(tasks: TaskRecord | string): Promise<Map<string, AnyTask>> {
  if (typeof tasks === "string") return loadTasks(tasks);
  const map = new Map<string, AnyTask>();
  for (const [identifier, task] of Object.entries(tasks)) {
    if (!TASK_IDENTIFIER.test(identifier)) throw new TaskLoadError(`task identifier ${JSON.stringify(identifier)} must be letters, digits and _, not starting with a digit`);
    if (!isDefinedTask(task)) throw new TaskLoadError(`task ${identifier} must be made with defineTask({...})`);
    if (task.identifier !== undefined && task.identifier !== identifier) throw new TaskLoadError(`task ${identifier} is defined with identifier ${JSON.stringify(task.identifier)}`);
    map.set(identifier, task);
  }
  return map;
}

/** runWorker's names for the connection settings, in the pool-mode check's messages. */
const RUN_WORKER_NAMES = { url: "databaseUrl", poolMode: "databasePoolMode", directUrl: "databaseDirectUrl" };

/**
 * Builds (does not start) a worker from the public options; runWorker and the CLI both use it.
 * `close()` ends the pools it opened.
 */
export async function createWorker(options: RunWorkerOptions<TaskRecord>, extras: WorkerExtras = {}): Promise<{ worker: Worker; relay: Relay | null; close(): Promise<void> }> {
  const settings = workerSettingsOf(options);
  const serviceFlow = serviceFlowOf(options.flow);
  if (options.databaseUrl === undefined && options.pool === undefined) throw new ConfigError("runWorker: give databaseUrl or pool");
  if (options.databaseUrl !== undefined && !z.string().regex(/^postgres(ql)?:\/\//).safeParse(options.databaseUrl).success) {
    throw new ConfigError("databaseUrl: must be a postgres:// or postgresql:// URL");
  }
  const poolMode = options.databasePoolMode ?? "session";
  if (poolMode !== "session" && poolMode !== "transaction") throw new ConfigError(`databasePoolMode: must be "session" or "transaction" (got ${JSON.stringify(poolMode)})`);
  if (options.databaseDirectUrl !== undefined) {
    if (!z.string().regex(/^postgres(ql)?:\/\//).safeParse(options.databaseDirectUrl).success) throw new ConfigError("databaseDirectUrl: must be a postgres:// or postgresql:// URL");
    if (poolMode !== "transaction") throw new ConfigError('databaseDirectUrl: is used only with databasePoolMode "transaction"');
  }
  const log = options.logger ?? createLogger("info");
  const syncs = syncsOf(options.syncs ?? []);
  const qdrant = syncs.length > 0 ? await qdrantClientOf(options.qdrant, "runWorker") : null;
  const cronItems = [...(extras.cronItems ?? []), ...(syncs.length > 0 ? reconcileCronItems(options.reconcileCron, "reconcileCron") : [])];
  const tasks = await tasksOf(options.tasks);
  for (const [identifier, task] of extras.extraTasks ?? []) tasks.set(identifier, task);
  const url = options.databaseUrl ?? urlOfPool(options.pool!);
  const connections: DatabaseConnections = { url, poolMode, directUrl: options.databaseDirectUrl };
  if (!extras.poolModeChecked) await checkPoolMode(connections, RUN_WORKER_NAMES);
  const sessionUrl = sessionUrlOf(connections);
  const toEnd: Array<{ end(): Promise<void> }> = [];
  const close = async () => {
    for (const pool of toEnd.reverse()) await pool.end().catch(() => {});
  };
  try {
    const queuePool = options.pool ?? createQueuePool(url, settings.concurrency);
    // An application's pool gets what createQueuePool gives ours (for the clients it opens from now on).
    retryLostOutcomes(queuePool);
    if (!options.pool) toEnd.push(queuePool);
    const timeouts = { statementTimeoutMs: settings.applyTimeoutMs, poolMode };
    const appPool = extras.appPool ?? (await createAppPool(url, settings.concurrency, timeouts));
    if (!extras.appPool) toEnd.push(appPool);
    const livenessPool = await createLivenessPool(url, timeouts);
    toEnd.push(livenessPool);
    if (options.migrate !== false) {
      await migrate({ pool: queuePool, databaseDirectUrl: migrationUrlOf(connections) ?? undefined, logger: log, ...(options.appMigrations ? { app: options.appMigrations } : {}) });
    }
    let relay: Relay | null = null;
    if (qdrant) {
      relay = createSyncRelay({ pool: appPool, listenUrl: sessionUrl, qdrant: qdrant.client, points: await pointWritesOf(qdrant), qdrantTimeoutMs: qdrant.timeoutMs, writeOrdering: qdrant.writeOrdering, syncs, relay: options.relay, log });
      // Registered whenever syncs are relayed, so a reconcile scheduled by any worker finds a runner.
      tasks.set(RECONCILE_TASK, createReconcileTask({ pool: appPool, qdrant: qdrant.client, syncs, readConsistency: qdrant.readConsistency }));
    }
    const worker = new Worker({
      queuePool,
      appPool,
      livenessPool,
      log,
      tasks,
      services: options.services ?? {},
      cronItems,
      poolMode,
      listenUrl: sessionUrl,
      ...settings,
      ...(options.flow === undefined ? {} : { flow: { concurrency: options.flow.concurrency ?? {}, queues: options.flow.queues ?? {} } }),
      ...serviceFlow,
    });
    return { worker, relay, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/**
 * Starts a worker in this process: it runs the given tasks' jobs (each job's writes commit
 * exactly once), heartbeats, and releases the jobs of dead workers, until stop().
 *
 * ```ts
 * const worker = await runWorker({ databaseUrl, tasks: { send_email: sendEmail }, services: { mail } });
 * process.once("SIGTERM", () => worker.stop());
 * ```
 */
export async function runWorker<Tasks extends TaskRecord>(options: RunWorkerOptions<Tasks>): Promise<RunningWorker> {
  const { worker, relay, close } = await createWorker(options as RunWorkerOptions<TaskRecord>);
  try {
    // A collection with other vectors than its sync declares is fatal before any job is claimed;
    // an unreachable Qdrant is only waited for (changes stay pending).
    await relay?.prepareCollections();
    await worker.start();
    await relay?.start();
  } catch (error) {
    await worker.stop().catch(() => {});
    await relay?.stop().catch(() => {});
    await close();
    throw error;
  }
  let stopping: Promise<void> | null = null;
  const stop = () =>
    (stopping ??= (async () => {
      try {
        await worker.stop();
        await relay?.stop();
      } finally {
        await close();
      }
    })());
  // A runner that dies on its own (a lost database) still deregisters and closes its pools.
  const done = worker.done.then(
    () => stopping ?? Promise.resolve(),
    async (error: unknown) => {
      await stop();
      throw error;
    },
  );
  done.catch(() => {});
  return { id: worker.id, done, stop };
}
