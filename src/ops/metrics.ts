import type pg from "pg";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { DatabasePool } from "slonik";
import type { Logger } from "../log.ts";
import type { BatchReport } from "../outbox/relay.ts";
import { runtimeEvents, type RuntimeEventMap } from "../runtime/events.ts";
import { DatabaseGauges } from "./databaseGauges.ts";

export interface MetricsConfig {
  log: Logger;
  /** Task identifiers this process runs: their job counters start at 0, so rate() works from the first scrape. */
  tasks?: readonly string[];
  /** graphile-worker's pg pool, reported as pool="queue". */
  queuePool?: pg.Pool;
  /** The slonik application pool, reported as pool="app". */
  appPool?: DatabasePool;
  /** Scrape-time figures from Postgres (queue depth, outbox, drift, workers); left out when absent. */
  database?: { pool: pg.Pool; collection: string; deadAfterMs: number };
  /** prom-client's process and Node.js metrics (CPU, memory, file descriptors, event-loop delay); default true. */
  defaultMetrics?: boolean;
}

/** From 5 ms to 5 minutes: a job spans a quick apply to a slow embedding call. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** Up to the largest RELAY_BATCH_SIZE (1000). */
const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000];

type Listener = { emitter: Emits<any, any>; event: string; fn: (...args: any[]) => void };

/** Anything that emits `event` with one argument (the relay, the heartbeat). */
export interface Emits<Event extends string, Arg> {
  on(event: Event, listener: (arg: Arg) => void): unknown;
  off(event: Event, listener: (arg: Arg) => void): unknown;
}

/**
 * The Prometheus metrics of one worker process, in a registry of its own (never prom-client's
 * global one, so two instances in one process, as in tests, do not collide). Counters and
 * histograms follow the runtime's, relay's and heartbeat's events; queue depth, outbox and
 * drift are read from Postgres at scrape time (DatabaseGauges); pool usage is read from the
 * pools at scrape time. `close()` unsubscribes.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly listeners: Listener[] = [];
  private readonly database: DatabaseGauges | null;

  private readonly jobsStarted: Counter<"task">;
  private readonly jobsSucceeded: Counter<"task">;
  private readonly jobsSkipped: Counter<"task">;
  private readonly jobsFailed: Counter<"task">;
  private readonly jobsDead: Counter<"task" | "reason">;
  private readonly jobDuration: Histogram<"task" | "outcome">;
  private readonly relayBatchSize: Histogram<string>;
  private readonly relayBatchDuration: Histogram<string>;
  private readonly relayChanges: Counter<"outcome">;
  private readonly heartbeats: Counter<"result">;
  private readonly lastHeartbeat: Gauge<string>;

  private readonly config: MetricsConfig;

  constructor(config: MetricsConfig) {
    this.config = config;
    const registers = [this.registry];
    if (config.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });

    this.jobsStarted = new Counter({ name: "pgconverge_jobs_started_total", help: "Job attempts started by this process.", labelNames: ["task"], registers });
    this.jobsSucceeded = new Counter({
      name: "pgconverge_jobs_succeeded_total",
      help: "Job attempts whose apply transaction committed.",
      labelNames: ["task"],
      registers,
    });
    this.jobsSkipped = new Counter({
      name: "pgconverge_jobs_skipped_total",
      help: "Re-runs of jobs already applied or dead-lettered (a crash before graphile-worker recorded completion); they changed nothing.",
      labelNames: ["task"],
      registers,
    });
    this.jobsFailed = new Counter({
      name: "pgconverge_jobs_failed_total",
      help: "Job attempts that failed transiently (or were aborted by shutdown) and will be retried.",
      labelNames: ["task"],
      registers,
    });
    this.jobsDead = new Counter({
      name: "pgconverge_jobs_dead_total",
      help: "Jobs this process moved to dead_letters: reason permanent (not retryable) or exhausted (out of attempts).",
      labelNames: ["task", "reason"],
      registers,
    });
    this.jobDuration = new Histogram({
      name: "pgconverge_job_duration_seconds",
      help: "Duration of job attempts (prepare and apply) by outcome: succeeded, failed (to be retried) or dead.",
      labelNames: ["task", "outcome"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.relayBatchSize = new Histogram({
      name: "pgconverge_relay_batch_size",
      help: "Outbox changes claimed per relay batch.",
      buckets: BATCH_SIZE_BUCKETS,
      registers,
    });
    this.relayBatchDuration = new Histogram({
      name: "pgconverge_relay_batch_duration_seconds",
      help: "Time from claiming a relay batch to its last acknowledgement (Qdrant requests included).",
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.relayChanges = new Counter({
      name: "pgconverge_relay_changes_total",
      help: "Outbox changes processed by this process's relay: synced to Qdrant, retried later, or dead.",
      labelNames: ["outcome"],
      registers,
    });
    this.heartbeats = new Counter({
      name: "pgconverge_heartbeats_total",
      help: "Heartbeats of this worker by result (ok, failed).",
      labelNames: ["result"],
      registers,
    });
    this.lastHeartbeat = new Gauge({
      name: "pgconverge_heartbeat_last_success_timestamp_seconds",
      help: "When this worker last recorded its heartbeat (Unix time; absent before the first).",
      registers,
    });
    this.lastHeartbeat.remove();

    const { queuePool, appPool } = config;
    new Gauge({
      name: "pgconverge_pool_connections",
      help: "Open connections of each pool by state: in_use or idle.",
      labelNames: ["pool", "state"],
      registers,
      collect() {
        this.reset();
        if (queuePool) {
          this.set({ pool: "queue", state: "in_use" }, queuePool.totalCount - queuePool.idleCount);
          this.set({ pool: "queue", state: "idle" }, queuePool.idleCount);
        }
        if (appPool) {
          const state = appPool.state();
          this.set({ pool: "app", state: "in_use" }, state.acquiredConnections);
          this.set({ pool: "app", state: "idle" }, state.idleConnections);
        }
      },
    });
    new Gauge({
      name: "pgconverge_pool_waiting_clients",
      help: "Callers waiting for a connection of each pool (above 0 for long: the pool is exhausted).",
      labelNames: ["pool"],
      registers,
      collect() {
        this.reset();
        if (queuePool) this.set({ pool: "queue" }, queuePool.waitingCount);
        if (appPool) this.set({ pool: "app" }, appPool.state().waitingClients);
      },
    });

    this.database = config.database ? new DatabaseGauges({ registry: this.registry, log: config.log, tasks: config.tasks, ...config.database }) : null;

    for (const task of config.tasks ?? []) {
      for (const counter of [this.jobsStarted, this.jobsSucceeded, this.jobsSkipped, this.jobsFailed]) counter.inc({ task }, 0);
      for (const reason of ["permanent", "exhausted"]) this.jobsDead.inc({ task, reason }, 0);
    }
    for (const outcome of ["synced", "retried", "dead"]) this.relayChanges.inc({ outcome }, 0);
    for (const result of ["ok", "failed"]) this.heartbeats.inc({ result }, 0);

    this.on(runtimeEvents, "job:started", ({ task }: RuntimeEventMap["job:started"][0]) => this.jobsStarted.inc({ task }));
    this.on(runtimeEvents, "job:applied", ({ task, durationMs }: RuntimeEventMap["job:applied"][0]) => {
      this.jobsSucceeded.inc({ task });
      this.jobDuration.observe({ task, outcome: "succeeded" }, durationMs / 1000);
    });
    this.on(runtimeEvents, "job:skipped", ({ task }: RuntimeEventMap["job:skipped"][0]) => this.jobsSkipped.inc({ task }));
    this.on(runtimeEvents, "job:retry", ({ task, durationMs }: RuntimeEventMap["job:retry"][0]) => {
      this.jobsFailed.inc({ task });
      this.jobDuration.observe({ task, outcome: "failed" }, durationMs / 1000);
    });
    this.on(runtimeEvents, "job:dead", ({ task, reason, durationMs }: RuntimeEventMap["job:dead"][0]) => {
      this.jobsDead.inc({ task, reason });
      this.jobDuration.observe({ task, outcome: "dead" }, durationMs / 1000);
    });
  }

  /** Counts the batches of a relay running in this process. */
  observeRelay(relay: Emits<"batch", BatchReport>): void {
    this.on(relay, "batch", (report: BatchReport) => {
      this.relayBatchSize.observe(report.claimed);
      this.relayBatchDuration.observe(report.durationMs / 1000);
      this.relayChanges.inc({ outcome: "synced" }, report.synced);
      this.relayChanges.inc({ outcome: "retried" }, report.retried);
      this.relayChanges.inc({ outcome: "dead" }, report.dead);
    });
  }

  /** Counts the beats of this process's heartbeat. */
  observeHeartbeat(heartbeat: Emits<"beat", { ok: boolean }>): void {
    this.on(heartbeat, "beat", ({ ok }: { ok: boolean }) => {
      this.heartbeats.inc({ result: ok ? "ok" : "failed" });
      if (ok) this.lastHeartbeat.set(Date.now() / 1000);
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text; reads the database figures first (bounded, never throws for them). */
  async render(): Promise<string> {
    await this.database?.refresh();
    return this.registry.metrics();
  }

  close(): void {
    for (const { emitter, event, fn } of this.listeners.splice(0)) emitter.off(event, fn);
  }

  private on(emitter: Emits<any, any>, event: string, fn: (...args: any[]) => void): void {
    emitter.on(event, fn);
    this.listeners.push({ emitter, event, fn });
  }
}
