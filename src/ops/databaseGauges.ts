import type pg from "pg";
import { Counter, Gauge, type Registry } from "prom-client";
import type { Logger } from "../log.ts";
import { describeError } from "../runtime/errors.ts";

export interface DatabaseGaugesConfig {
  registry: Registry;
  /** A probe pool (createProbePool): small, with a short statement_timeout. */
  pool: pg.Pool;
  log: Logger;
  /** The Qdrant collection whose outbox and reconcile results are reported. */
  collection: string;
  /** A worker silent for longer than this counts as dead (WORKER_DEAD_AFTER_MS). */
  deadAfterMs: number;
  /** Tasks whose queue depth reads 0 rather than absent when none of their jobs is queued. */
  tasks?: readonly string[];
}

/** pgconverge_service_state's values: the higher, the less the service is called. */
const SERVICE_STATE_VALUES: Record<string, number> = { closed: 0, half_open: 1, open: 2 };

/** Job states as a user sees them; `exhausted` jobs are about to be moved to dead_letters by a sweeper. */
export const JOB_STATES = ["pending", "scheduled", "running", "retrying", "exhausted"] as const;

/**
 * Figures read from Postgres when Prometheus scrapes, not kept in memory: any number of
 * workers report the same truth and a restarted worker starts from it. One statement per
 * family, each under the probe pool's statement_timeout. The tables read are queues (rows
 * leave them when done), except dead_letters, which is counted from its (task, dead_at)
 * index. A failed query leaves its families absent from that scrape, never stale, counts
 * in pgconverge_scrape_errors_total and is logged (warn once per failure streak, then
 * debug); it never fails the scrape or the process.
 */
export class DatabaseGauges {
  private readonly jobs: Gauge<"task" | "state">;
  private readonly deadLetters: Gauge<"task">;
  private readonly outboxChanges: Gauge<"collection" | "state">;
  private readonly outboxOldest: Gauge<"collection">;
  private readonly drift: Gauge<"collection" | "kind">;
  private readonly reconcileFinished: Gauge<"collection">;
  private readonly workers: Gauge<"state">;
  private readonly unknownTasks: Gauge<"task">;
  private readonly flowInUse: Gauge<"kind" | "name">;
  private readonly flowWaiting: Gauge<"kind" | "name">;
  private readonly flowMaxRunning: Gauge<"kind" | "name">;
  private readonly errors: Counter<"query">;
  private readonly serviceState: Gauge<"service">;
  private readonly serviceStateAge: Gauge<"service">;
  private readonly serviceThrottled: Gauge<"service">;
  private readonly failing = new Set<string>();
  private refreshing: Promise<void> | null = null;

  private readonly config: DatabaseGaugesConfig;

  constructor(config: DatabaseGaugesConfig) {
    this.config = config;
    const registers = [config.registry];
    this.jobs = new Gauge({
      name: "pgconverge_jobs",
      help: "Jobs in the queue by task and state (pending: runnable now; scheduled: run_at in the future; running: locked by a worker; retrying: failed before, waiting or runnable; exhausted: out of attempts, about to be dead-lettered).",
      labelNames: ["task", "state"],
      registers,
    });
    this.deadLetters = new Gauge({ name: "pgconverge_dead_letters", help: "Rows in dead_letters by task.", labelNames: ["task"], registers });
    this.outboxChanges = new Gauge({
      name: "pgconverge_outbox_changes",
      help: "Outbox rows by state: pending (not yet in Qdrant) and dead (failed permanently, see `pgconverge outbox list --dead`).",
      labelNames: ["collection", "state"],
      registers,
    });
    this.outboxOldest = new Gauge({
      name: "pgconverge_outbox_oldest_pending_age_seconds",
      help: "Age of the oldest pending outbox change (0 when none is pending): how far Qdrant lags behind Postgres.",
      labelNames: ["collection"],
      registers,
    });
    this.drift = new Gauge({
      name: "pgconverge_reconcile_drift",
      help: "Differences found by the last reconcile run: missing points, extra points, stale points.",
      labelNames: ["collection", "kind"],
      registers,
    });
    this.reconcileFinished = new Gauge({
      name: "pgconverge_reconcile_last_run_timestamp_seconds",
      help: "When the last reconcile run finished (Unix time).",
      labelNames: ["collection"],
      registers,
    });
    this.workers = new Gauge({
      name: "pgconverge_workers",
      help: "Registered worker processes: alive (heartbeat within WORKER_DEAD_AFTER_MS) or dead (not yet swept).",
      labelNames: ["state"],
      registers,
    });
    this.unknownTasks = new Gauge({
      name: "pgconverge_jobs_unknown_task",
      help: "Due jobs of a task no live worker runs: they wait until a worker that has the task starts (absent when none, or when no worker is alive).",
      labelNames: ["task"],
      registers,
    });
    this.flowInUse = new Gauge({
      name: "pgconverge_flow_in_use",
      help: "Slots taken of each fleet-wide concurrency limit (kind task or queue): jobs running under it in the whole fleet.",
      labelNames: ["kind", "name"],
      registers,
    });
    this.flowWaiting = new Gauge({
      name: "pgconverge_flow_waiting",
      help: "Jobs parked until a slot of the fleet-wide concurrency limit is freed.",
      labelNames: ["kind", "name"],
      registers,
    });
    this.flowMaxRunning = new Gauge({
      name: "pgconverge_flow_max_running",
      help: "Size of each fleet-wide concurrency limit (FLOW_TASK_CONCURRENCY, FLOW_QUEUE_CONCURRENCY, a task's flow.concurrency).",
      labelNames: ["kind", "name"],
      registers,
    });
    this.serviceState = new Gauge({
      name: "pgconverge_service_state",
      help: "Circuit breaker of each external service called through callService, fleet-wide: 0 closed, 1 half_open (a probe may go), 2 open (calls deferred).",
      labelNames: ["service"],
      registers,
    });
    this.serviceStateAge = new Gauge({ name: "pgconverge_service_state_age_seconds", help: "Seconds each service's circuit has been in its state.", labelNames: ["service"], registers });
    this.serviceThrottled = new Gauge({
      name: "pgconverge_service_throttled_seconds",
      help: "Seconds calls to each service have waited (rate-limit sleeps, deferrals for a turn, a 429 pause or an open circuit), summed over the fleet since the service was first called; only grows.",
      labelNames: ["service"],
      registers,
    });
    this.errors = new Counter({
      name: "pgconverge_scrape_errors_total",
      help: "Scrape-time database queries that failed (their families were left out of that scrape).",
      labelNames: ["query"],
      registers,
    });
  }

  /** Runs the queries and sets the gauges. Concurrent scrapes share one refresh. */
  refresh(): Promise<void> {
    this.refreshing ??= this.refreshOnce().finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  private async refreshOnce(): Promise<void> {
    // One after another on purpose: the probe pool has two connections, one stays for /readyz.
    await this.read("jobs", [this.jobs], () => this.readJobs());
    await this.read("dead_letters", [this.deadLetters], () => this.readDeadLetters());
    await this.read("outbox", [this.outboxChanges, this.outboxOldest], () => this.readOutbox());
    await this.read("reconcile_runs", [this.drift, this.reconcileFinished], () => this.readReconcile());
    await this.read("workers", [this.workers], () => this.readWorkers());
    await this.read("unknown_tasks", [this.unknownTasks], () => this.readUnknownTasks());
    await this.read("flow_status", [this.flowInUse, this.flowWaiting, this.flowMaxRunning], () => this.readFlow());
    await this.read("flow_services", [this.serviceState, this.serviceStateAge, this.serviceThrottled], () => this.readServices());
  }

  private async readServices(): Promise<void> {
    const { rows } = await this.config.pool.query<{ name: string; state: string; state_age_s: number; throttled_seconds: number }>(
      "select name, state, state_age_s, throttled_seconds from flow_services_status",
    );
    for (const gauge of [this.serviceState, this.serviceStateAge, this.serviceThrottled]) gauge.reset();
    for (const row of rows) {
      this.serviceState.set({ service: row.name }, SERVICE_STATE_VALUES[row.state] ?? 0);
      this.serviceStateAge.set({ service: row.name }, row.state_age_s);
      this.serviceThrottled.set({ service: row.name }, row.throttled_seconds);
    }
  }

  private async read(query: string, gauges: Gauge<string>[], run: () => Promise<void>): Promise<void> {
    try {
      await run();
      if (this.failing.delete(query)) this.config.log.info({ query }, "metrics query works again");
    } catch (error) {
      for (const gauge of gauges) gauge.reset();
      this.errors.inc({ query });
      const fields = { query, error: describeError(error) };
      if (this.failing.has(query)) this.config.log.debug(fields, "metrics query failed; its metrics are left out of this scrape");
      else this.config.log.warn(fields, "metrics query failed; its metrics are left out of scrapes until it works again");
      this.failing.add(query);
    }
  }

  private async readJobs(): Promise<void> {
    // job_list (sql/000003) names the states, so metrics, `status` and psql agree on them.
    const { rows } = await this.config.pool.query<{ task: string; state: string; count: number }>(
      "select task, state, count(*)::int as count from job_list group by 1, 2",
    );
    this.jobs.reset();
    // Every state of every known or queued task, so an emptied queue reads 0 instead of vanishing.
    const tasks = new Set([...(this.config.tasks ?? []), ...rows.map((row) => row.task)]);
    for (const task of tasks) for (const state of JOB_STATES) this.jobs.set({ task, state }, 0);
    for (const row of rows) this.jobs.set({ task: row.task, state: row.state }, row.count);
  }

  private async readDeadLetters(): Promise<void> {
    const { rows } = await this.config.pool.query<{ task: string; count: number }>(
      "select task, count(*)::int as count from dead_letters group by task",
    );
    this.deadLetters.reset();
    for (const row of rows) this.deadLetters.set({ task: row.task }, row.count);
  }

  private async readOutbox(): Promise<void> {
    const { collection } = this.config;
    const { rows } = await this.config.pool.query<{ pending: number; dead: number; oldest_seconds: number }>(
      `select count(*) filter (where state = 'pending')::int as pending,
              count(*) filter (where state = 'dead')::int as dead,
              coalesce(extract(epoch from now() - min(created_at) filter (where state = 'pending')), 0)::float8 as oldest_seconds
       from outbox where collection = $1`,
      [collection],
    );
    const row = rows[0]!;
    this.outboxChanges.set({ collection, state: "pending" }, row.pending);
    this.outboxChanges.set({ collection, state: "dead" }, row.dead);
    this.outboxOldest.set({ collection }, Math.max(0, row.oldest_seconds));
  }

  private async readReconcile(): Promise<void> {
    const { collection } = this.config;
    // Newest first along the primary key, stopping at the first run of this collection.
    const { rows } = await this.config.pool.query<{ missing: string; extra: string; stale: string; finished: number }>(
      `select missing, extra, stale, extract(epoch from finished_at)::float8 as finished
       from reconcile_runs where collection = $1 order by id desc limit 1`,
      [collection],
    );
    this.drift.reset();
    this.reconcileFinished.reset();
    const run = rows[0];
    if (!run) return;
    for (const kind of ["missing", "extra", "stale"] as const) this.drift.set({ collection, kind }, Number(run[kind]));
    this.reconcileFinished.set({ collection }, run.finished);
  }

  private async readUnknownTasks(): Promise<void> {
    // The same definition as the unknown_tasks view, with this process's threshold.
    const { rows } = await this.config.pool.query<{ task: string; jobs: number }>(
      "select task, jobs::int as jobs from pgconverge_unknown_tasks($1)",
      [this.config.deadAfterMs],
    );
    this.unknownTasks.reset();
    for (const row of rows) this.unknownTasks.set({ task: row.task }, row.jobs);
  }

  private async readFlow(): Promise<void> {
    // The view `status` reads too (sql/000005): one row per limit, a handful at most.
    const { rows } = await this.config.pool.query<{ kind: string; name: string; max_running: number; in_use: number; waiting: number }>(
      "select kind, name, max_running, in_use, waiting from flow_status",
    );
    for (const gauge of [this.flowInUse, this.flowWaiting, this.flowMaxRunning]) gauge.reset();
    for (const row of rows) {
      const labels = { kind: row.kind, name: row.name };
      this.flowInUse.set(labels, row.in_use);
      this.flowWaiting.set(labels, row.waiting);
      this.flowMaxRunning.set(labels, row.max_running);
    }
  }

  private async readWorkers(): Promise<void> {
    const { rows } = await this.config.pool.query<{ alive: number; dead: number }>(
      `select count(*) filter (where heartbeat_at >= now() - make_interval(secs => $1))::int as alive,
              count(*) filter (where heartbeat_at < now() - make_interval(secs => $1))::int as dead
       from workers`,
      [this.config.deadAfterMs / 1000],
    );
    this.workers.set({ state: "alive" }, rows[0]!.alive);
    this.workers.set({ state: "dead" }, rows[0]!.dead);
  }
}
