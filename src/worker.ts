import { parseCronItems, run, type CronItem, type Runner, type TaskList, type WorkerEvents, type WorkerPool } from "graphile-worker";
import { EventEmitter } from "node:events";
import type pg from "pg";
import type { Config } from "./config.ts";
import type { DatabasePool } from "slonik";
import type { PoolMode } from "./db/connections.ts";
import { retryingConnects } from "./db/connectRetry.ts";
import { Listener } from "./db/listener.ts";
import { FlowControl } from "./flow/flowControl.ts";
import { resolveLimits, unusedLimitNames, type WorkerFlowOptions } from "./flow/options.ts";
import { Heartbeat } from "./liveness/heartbeat.ts";
import { LostJobs } from "./liveness/lostJobs.ts";
import { Sweeper } from "./liveness/sweeper.ts";
import { graphileLogger, type Logger } from "./log.ts";
import type { AnyTask } from "./runtime/defineTask.ts";
import { toGraphileTask } from "./runtime/executor.ts";
import { describeError } from "./runtime/errors.ts";
import { ServiceGate, type ServiceLimit } from "./flow/serviceGate.ts";
import { serviceFlowFromConfig, serviceFlowOf } from "./flow/serviceSettings.ts";
import { DueNudger } from "./flow/dueNudger.ts";
import { GroupCommitter } from "./runtime/groupCommit.ts";

export interface WorkerConfig {
  queuePool: pg.Pool;
  appPool: DatabasePool;
  /** The heartbeat's and sweeper's own pool (createLivenessPool), so job work cannot delay them. */
  livenessPool: DatabasePool;
  log: Logger;
  tasks: Map<string, AnyTask>;
  /** Clients handed to every task run. */
  services: object;
  concurrency: number;
  taskTimeoutMs: number;
  applyTimeoutMs: number;
  heartbeatIntervalMs: number;
  deadAfterMs: number;
  sweepIntervalMs: number;
  /** Days of job history kept; the sweeper drops older days. */
  historyRetentionDays: number;
  /** Graceful stop: in-flight jobs get this long, then their AbortSignal fires. */
  shutdownTimeoutMs: number;
  /** Fallback poll for due jobs, ms; new jobs arrive by LISTEN/NOTIFY without waiting for it. */
  pollIntervalMs: number;
  /**
   * How queuePool's URL keeps sessions; default "session". "transaction" (a transaction-mode
   * pooler): graphile-worker runs without named prepared statements, and its own LISTEN,
   * which it always holds on a client of queuePool and which hears nothing through such a
   * pooler, is replaced by listenUrl's.
   */
  poolMode?: PoolMode;
  /**
   * In transaction mode: a direct URL where this worker LISTENs for new jobs (graphile-worker's
   * channel) and wakes graphile-worker's pool, so jobs start at once; null: found by polling
   * every pollIntervalMs only.
   */
  listenUrl?: string | null;
  /** Recurring jobs (graphile-worker cron); none by default. */
  cronItems?: CronItem[];
  /** Most jobs whose apply phases share one commit (group commit); 1 commits each job alone. */
  applyBatchSize?: number;
  /**
   * Jobs graphile-worker fetches (and locks) per query and hands out locally; completions are
   * recorded in batches too. 1 fetches one job per query.
   */
  localQueueSize?: number;
  /** Fleet-wide limits over what the tasks declare (runWorker's flow, FLOW_*_CONCURRENCY). Default: the tasks' own. */
  flow?: WorkerFlowOptions;
  /** External services' fleet-wide rate limits (callService); others are called without one. */
  serviceLimits?: Readonly<Record<string, ServiceLimit>>;
  /** Consecutive service failures that open its circuit. Default 5. */
  breakerFailureThreshold?: number;
  /** How long an open circuit defers calls before one probe, ms. Default 30 s. */
  breakerOpenMs?: number;
}

/** The part of a WorkerConfig that comes straight from the environment's settings. */
export function workerSettings(config: Config) {
  return {
    concurrency: config.WORKER_CONCURRENCY,
    taskTimeoutMs: config.TASK_TIMEOUT_MS,
    applyTimeoutMs: config.APPLY_TIMEOUT_MS,
    heartbeatIntervalMs: config.HEARTBEAT_INTERVAL_MS,
    deadAfterMs: config.WORKER_DEAD_AFTER_MS,
    sweepIntervalMs: config.SWEEP_INTERVAL_MS,
    historyRetentionDays: config.JOB_HISTORY_RETENTION_DAYS,
    shutdownTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
    pollIntervalMs: config.POLL_INTERVAL_MS,
    applyBatchSize: config.APPLY_BATCH_SIZE,
    localQueueSize: config.WORKER_LOCAL_QUEUE_SIZE,
    ...serviceFlowOf(serviceFlowFromConfig(config)),
  } satisfies Partial<WorkerConfig>;
}

const DEFAULT_APPLY_BATCH_SIZE = 64;

/**
 * Batch transactions in flight at once: while one waits for its commit to reach disk the
 * next runs its statements. Jobs hold their slots until their batch commits, so with many
 * slots a couple of batches leave most of them waiting on commits; one more batch per 25
 * slots, up to 8 (each holds a connection; more would mostly add lock contention).
 */
export function concurrentBatches(concurrency: number): number {
  return Math.min(8, Math.max(2, Math.ceil(concurrency / 25)));
}

/** The job count of a "jobs:insert" notification ({"count": n}); 1 when it says none. */
function jobsInserted(payload: string | undefined): number {
  try {
    const count = (JSON.parse(payload ?? "") as { count?: unknown }).count;
    return typeof count === "number" ? count : 1;
  } catch {
    return 1;
  }
}

/** Whether a "worker:migrate" notification says the migration was breaking ({"breaking": true}). */
function isBreakingMigration(payload: string | undefined): boolean {
  try {
    return (JSON.parse(payload ?? "") as { breaking?: unknown }).breaking === true;
  } catch {
    return false;
  }
}

/**
 * graphile-worker's schema had a breaking migration (a newer graphile-worker migrated the
 * database): this worker's queries may no longer fit it, so it stopped. `exitCode` is
 * graphile-worker's own for this case, 57, which a supervisor should answer with a restart on
 * the new code.
 */
export class BreakingMigrationError extends Error {
  override name = "BreakingMigrationError";
  readonly exitCode = 57;
}

/**
 * graphile-worker's runner ended without being asked to: its pool shut itself down (a failed
 * outcome batch, "queue is in an inconsistent state"; a failed local queue). Its runner then
 * resolves as if stopped, while this process would go on heartbeating for jobs nothing runs or
 * completes, keeping them locked for good. So the worker stops (deregistering releases them).
 */
export class RunnerStoppedError extends Error {
  override name = "RunnerStoppedError";
}

/**
 * Heartbeats between two looks for lost jobs (60 s at the default interval): each look scans
 * graphile-worker's jobs table, and a lost job waits two looks.
 */
const LOST_JOB_LOOK_EVERY = 30;

/** After the abort, how long aborted jobs get to unwind before they are force-released. */
const ABORT_GRACE_MS = 5_000;

/**
 * One worker process: graphile-worker's runner executing the tasks through the transactional
 * executor, plus the heartbeat that proves this process alive and the sweeper that releases
 * the jobs of dead ones. `start()` and `stop()` are idempotent.
 */
export class Worker {
  readonly heartbeat: Heartbeat;
  readonly sweeper: Sweeper;
  private readonly lostJobs: LostJobs;
  /** Null when none of this worker's tasks has a fleet-wide limit. */
  private readonly flow: FlowControl | null;
  private runner: Runner | null = null;
  private workerPool: WorkerPool | null = null;
  private jobListener: Listener | null = null;
  private stopping: Promise<void> | null = null;
  /** The notice of a breaking migration that shut graphile-worker's pool down, if one did. */
  private breakingMigration: string | null = null;
  private runnerEnded = false;
  /** Set by stop(): a runner ending after it was asked to. */
  private stopRequested = false;
  /** graphile-worker's pool began shutting down before stop() was called, and why. */
  private selfStopped: string | null = null;
  /** Aborted when the worker stops: graphile-worker's connects stop waiting for the server. */
  private readonly connects = new AbortController();
  private dueNudger: DueNudger | null = null;

  private readonly config: WorkerConfig;

  constructor(config: WorkerConfig) {
    this.config = config;
    this.heartbeat = new Heartbeat({
      pool: config.livenessPool,
      log: config.log,
      concurrency: config.concurrency,
      intervalMs: config.heartbeatIntervalMs,
      tasks: [...config.tasks.keys()],
    });
    this.lostJobs = new LostJobs({
      pool: config.livenessPool,
      log: config.log,
      lockers: () => this.heartbeat.lockers,
      intervalMs: LOST_JOB_LOOK_EVERY * config.heartbeatIntervalMs,
    });
    this.sweeper = new Sweeper({
      pool: config.livenessPool,
      log: config.log,
      deadAfterMs: config.deadAfterMs,
      intervalMs: config.sweepIntervalMs,
      historyRetentionDays: config.historyRetentionDays,
    });
    const limits = resolveLimits(config.tasks, config.flow);
    this.flow = limits.size === 0 ? null : new FlowControl({ pool: config.appPool, log: config.log, limits });
    const unused = unusedLimitNames(config.tasks, config.flow);
    if (unused.length > 0) config.log.warn({ unused }, "flow limits name tasks or queues this worker does not run; they are not written (a worker that runs them writes its own)");
  }

  get id(): string {
    return this.heartbeat.workerId;
  }

  async start(): Promise<void> {
    if (this.runner) return;
    const { config } = this;
    await this.heartbeat.start();
    await this.flow?.install();
    const events: WorkerEvents = new EventEmitter();
    // Lock holder ids are random and known only once created; the heartbeat records each
    // one as it appears, before that worker can have claimed a job.
    events.on("pool:create", ({ workerPool }) => {
      this.workerPool = workerPool;
      this.heartbeat.addLocker(workerPool.id);
    });
    events.on("worker:create", ({ worker }) => this.heartbeat.addLocker(worker.workerId));
    // The jobs this process holds, for LostJobs: fetched into the local queue or started; when
    // returned or ended, held until LostJobs finds them unlocked.
    events.on("localQueue:getJobs:complete", ({ jobs }) => jobs.forEach((job) => this.lostJobs.hold(job.id)));
    events.on("job:start", ({ job }) => this.lostJobs.hold(job.id));
    events.on("localQueue:returnJobs", ({ jobs }) => jobs.forEach((job) => this.lostJobs.drop(job.id)));
    events.on("job:complete", ({ job }) => this.lostJobs.drop(job.id));
    // A pool shutdown that stop() did not ask for: the fatal error comes first and says more.
    let fatal: string | null = null;
    events.on("pool:fatalError", ({ error, action }) => (fatal ??= `${action} failed: ${describeError(error)}`));
    events.on("pool:gracefulShutdown", ({ message }) => {
      if (!this.stopRequested) this.selfStopped ??= fatal ?? message;
    });
    // On a session graphile-worker's own listener hears the notice and shuts its pool down (and
    // sets process.exitCode); done then says why the pool stopped.
    events.on("pool:listen:notification", ({ message }) => {
      if (message.channel === "worker:migrate" && isBreakingMigration(message.payload)) this.breakingMigration = message.payload ?? "";
    });
    const committer = new GroupCommitter({
      pool: config.appPool,
      applyTimeoutMs: config.applyTimeoutMs,
      maxBatchSize: config.applyBatchSize ?? DEFAULT_APPLY_BATCH_SIZE,
      maxConcurrentBatches: concurrentBatches(config.concurrency),
    });
    this.dueNudger = new DueNudger((count) => this.workerPool?.nudge(count));
    const serviceGate = new ServiceGate({
      onDeferred: (runAt) => this.dueNudger?.at(runAt),
      pool: config.appPool,
      log: config.log,
      services: config.serviceLimits ?? {},
      failureThreshold: config.breakerFailureThreshold ?? 5,
      openMs: config.breakerOpenMs ?? 30_000,
    });
    await serviceGate.start();
    const taskList: TaskList = {};
    for (const [identifier, task] of config.tasks) {
      taskList[identifier] = toGraphileTask(identifier, task, {
        pool: config.appPool,
        log: config.log,
        taskTimeoutMs: config.taskTimeoutMs,
        applyTimeoutMs: config.applyTimeoutMs,
        services: config.services,
        committer,
        flow: this.flow,
        serviceGate,
      });
    }
    const pooled = config.poolMode === "transaction";
    this.runner = await run({
      // Its connects wait out a restarting server (see retryingConnects).
      pgPool: retryingConnects(config.queuePool, this.connects.signal),
      // A transaction-mode pooler shares server connections: a statement prepared under a name
      // on one is missing on (or collides with) the next.
      noPreparedStatements: pooled,
      concurrency: config.concurrency,
      pollInterval: config.pollIntervalMs,
      taskList,
      // Schedules come from code, not from a crontab file in the working directory.
      parsedCronItems: parseCronItems(config.cronItems ?? []),
      events,
      logger: graphileLogger(config.log),
      noHandleSignals: true,
      preset: {
        worker: {
          gracefulShutdownAbortTimeout: config.shutdownTimeoutMs,
          // A crash between a commit and the batched completion only re-runs the job, which
          // the ledger turns into a no-op; the heartbeat knows the pool's lock id, so locally
          // queued jobs of a dead worker are released like running ones.
          ...((config.localQueueSize ?? 1) > 1 ? { localQueue: { size: config.localQueueSize! }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } : {}),
        },
      },
    });
    this.runner.promise.then(() => (this.runnerEnded = true), () => (this.runnerEnded = true));
    if (pooled) await this.listenForJobs();
    await this.heartbeat.beat();
    this.sweeper.start();
    this.lostJobs.start();
    config.log.info({ workerId: this.id, concurrency: config.concurrency, tasks: [...config.tasks.keys()] }, "worker started");
  }

  /**
   * graphile-worker LISTENs on a client of its pool, through the pooler, where nothing
   * arrives; the same notifications are received here on the direct connection instead and
   * handled as its own listener does: new jobs wake its pool (WorkerPool.nudge), a breaking
   * migration of its schema shuts the pool down.
   */
  private async listenForJobs(): Promise<void> {
    const { listenUrl, log, pollIntervalMs } = this.config;
    if (!listenUrl) {
      log.warn({ pollIntervalMs }, "no session for LISTEN (transaction-mode pooler, no direct URL): new jobs are found by polling only");
      return;
    }
    this.jobListener = new Listener({
      url: listenUrl,
      channels: ["jobs:insert", "worker:migrate"],
      onNotification: (message) => {
        if (message.channel === "jobs:insert") {
          const count = jobsInserted(message.payload);
          if (count > 0) this.workerPool?.nudge(count);
        } else if (isBreakingMigration(message.payload)) {
          // What graphile-worker's own listener does: its schema changed under it, so stop, and
          // exit 57 when the process ends on its own.
          if (this.breakingMigration !== null) return; // graphile-worker's own listener heard it too
          log.warn({ payload: message.payload }, "graphile-worker's schema had a breaking migration; shutting down");
          this.breakingMigration = message.payload ?? "";
          process.exitCode = new BreakingMigrationError().exitCode;
          void Promise.resolve(this.workerPool?.gracefulShutdown("breaking migration")).catch(() => {});
        }
      },
      retryMs: pollIntervalMs,
      log,
      name: "pgconverge-jobs-listener",
    });
    await this.jobListener.start();
  }

  /**
   * Settles when the runner stops: resolves after stop(); rejects with a BreakingMigrationError
   * when a breaking migration stopped it, with a RunnerStoppedError when it stopped on its own,
   * and on a fatal error.
   */
  get done(): Promise<void> {
    const runner = this.runner;
    if (!runner) return Promise.resolve();
    return runner.promise.then(() => {
      if (this.breakingMigration !== null) {
        throw new BreakingMigrationError(`graphile-worker's schema had a breaking migration (${this.breakingMigration}); restart on the new version`);
      }
      // Also when stop() came while graphile-worker was already shutting its pool down.
      if (this.selfStopped !== null || !this.stopRequested) {
        throw new RunnerStoppedError(`graphile-worker's runner stopped on its own (${this.selfStopped ?? "no reason given"}); stopping this worker so that its jobs are released`);
      }
    });
  }

  /**
   * Stops claiming, lets in-flight jobs finish for shutdownTimeoutMs, aborts the rest (they
   * are released and retried), then deregisters.
   */
  stop(): Promise<void> {
    this.stopRequested = true;
    this.stopping ??= this.stopOnce();
    return this.stopping;
  }

  private async stopOnce(): Promise<void> {
    const { log, shutdownTimeoutMs } = this.config;
    const runner = this.runner;
    // A runner that already stopped on its own (a breaking migration) has nothing to stop.
    if (runner && !this.runnerEnded) {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<"deadline">((resolve) => {
        timer = setTimeout(() => resolve("deadline"), shutdownTimeoutMs + ABORT_GRACE_MS);
      });
      // Until the runner has ended, not just until stop() returns: graphile-worker's stop()
      // returns at once (or rejects, "already stopped") when its pool is already shutting itself
      // down, with jobs still running, and deregistering now would release them under their run.
      const stopped = runner
        .stop()
        .catch((error: unknown) => log.debug({ error: String(error) }, "graphile-worker's runner was already stopping"))
        .then(() => runner.promise)
        .then(() => "stopped" as const);
      const result = await Promise.race([stopped, deadline]).catch((error) => {
        log.warn({ error: String(error) }, "graceful stop failed; releasing in-flight jobs");
        return "deadline" as const;
      });
      clearTimeout(timer);
      if (result === "deadline") await runner.kill("shutdown deadline passed").catch(() => {});
    }
    this.connects.abort();
    this.dueNudger?.stop();
    await this.jobListener?.stop();
    await this.sweeper.stop();
    await this.lostJobs.stop();
    await this.heartbeat.stop().catch((error) => log.warn({ error: String(error) }, "could not deregister"));
    log.info({ workerId: this.id }, "worker stopped");
  }
}
