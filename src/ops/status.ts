import { sql, type CommonQueryMethods, type DatabasePool } from "slonik";
import { z } from "zod";
import { readServices } from "../flow/serviceQueries.ts";

/**
 * What `pgconverge status` reports, read from the inspection views of
 * sql/000003_inspection_views.sql, so that psql and the CLI give the same answers.
 */

export interface JobStateCounts {
  /** Due now, waiting for a worker. */
  pending: number;
  /** First attempt at a future run_at. */
  scheduled: number;
  /** Failed before; next attempt at run_at. */
  retrying: number;
  /** Locked by a worker. */
  running: number;
  /** Out of attempts, about to be dead-lettered by the sweeper. */
  exhausted: number;
  /** In dead_letters. */
  dead: number;
  /** How long the longest-waiting pending job has been due, s; null when none is pending. */
  oldestPendingAgeSeconds: number | null;
}

export interface OutboxCounts {
  pending: number;
  retrying: number;
  inFlight: number;
  dead: number;
  /** Age of the oldest pending change, s: the relay's lag. Null when nothing is pending. */
  oldestPendingAgeSeconds: number | null;
}

export interface WorkerState {
  id: string;
  hostname: string;
  pid: number;
  alive: boolean;
  heartbeatAt: string;
  heartbeatAgeSeconds: number;
  runningJobs: number;
  concurrency: number;
}

export interface ReconcileState {
  drift: number;
  missing: number;
  extra: number;
  stale: number;
  repaired: boolean;
  finishedAt: string;
  ageSeconds: number;
}

export interface UnknownTaskJobs {
  task: string;
  /** Due jobs of the task; no live worker runs it, so they wait until one that does starts. */
  count: number;
}

/** A fleet-wide concurrency limit (flow_status, sql/000005). */
export interface FlowLimitState {
  kind: "task" | "queue";
  name: string;
  maxRunning: number;
  inUse: number;
  /** Jobs parked until a slot is freed. */
  waiting: number;
  /** How long the longest-waiting of them has waited, s; null when none waits. */
  oldestWaitingAgeSeconds: number | null;
}

export interface StatusReport {
  /** unknownTasks: due jobs of tasks no live worker runs (empty when no worker is alive). */
  jobs: JobStateCounts & { byTask: Record<string, JobStateCounts>; unknownTasks: UnknownTaskJobs[] };
  outbox: OutboxCounts & { byCollection: Record<string, OutboxCounts> };
  /** deadAfterMs is the threshold alive/dead was judged by. */
  workers: { alive: number; dead: number; deadAfterMs: number; list: WorkerState[] };
  /** The latest reconcile run per collection; empty when none has run. */
  reconcile: { byCollection: Record<string, ReconcileState> };
  /** Fleet-wide concurrency limits, by kind and name; empty when none is set. */
  flow: { limits: FlowLimitState[] };
  /** External services called through callService, by name: breaker state, pause, throttled time (flow_services_status). */
  services: Record<string, ServiceState>;
}

export interface ServiceState {
  /** Fleet-wide rate, requests or cost units per second; null: none. */
  rate: number | null;
  /** Circuit breaker: closed, open or half_open. */
  state: "closed" | "open" | "half_open";
  /** When it entered that state (ISO 8601). */
  since: string;
  consecutiveFailures: number;
  /** While open: when the next probe may go (ISO 8601); null otherwise. */
  reopenAt: string | null;
  /** Until when a 429 paused the fleet (ISO 8601); null when not paused. */
  pausedUntil: string | null;
  probeInFlight: boolean;
  /** Seconds calls have waited for the service (sleeps and deferrals), summed. */
  throttledSeconds: number;
  lastError: string | null;
}

const count = z.coerce.number().int();
const seconds = z.number().nullable();

const JobCountsRow = z.object({
  task: z.string(),
  pending: count,
  scheduled: count,
  retrying: count,
  running: count,
  exhausted: count,
  dead: count,
  oldest_pending_age_s: seconds,
});

const UnknownTaskRow = z.object({ task: z.string(), jobs: count });

const OutboxLagRow = z.object({
  collection: z.string(),
  pending: count,
  retrying: count,
  in_flight: count,
  dead: count,
  oldest_pending_age_s: seconds,
});

const WorkerRow = z.object({
  worker_id: z.string(),
  hostname: z.string(),
  pid: z.number(),
  alive: z.boolean(),
  heartbeat_at: z.coerce.date(),
  heartbeat_age_s: z.number(),
  running_jobs: count,
  concurrency: z.number(),
});

const ReconcileRow = z.object({
  collection: z.string(),
  drift: count,
  missing: count,
  extra: count,
  stale: count,
  repaired: z.boolean(),
  finished_at: z.coerce.date(),
  age_s: z.number(),
});

/**
 * Reads the whole report in one read-only REPEATABLE READ transaction, so its numbers come
 * from a single snapshot and add up. `deadAfterMs` (WORKER_DEAD_AFTER_MS) is handed to
 * worker_status through the setting it reads.
 */
export function readStatus(pool: DatabasePool, options: { deadAfterMs: number }): Promise<StatusReport> {
  return pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`set transaction isolation level repeatable read, read only`);
    await tx.query(sql.unsafe`select set_config('pgconverge.worker_dead_after_ms', ${String(Math.round(options.deadAfterMs))}, true)`);
    const jobs = await readJobs(tx);
    const outbox = await readOutbox(tx);
    const workers = await readWorkers(tx);
    const reconcile = await readReconcile(tx);
    const flow = await readFlow(tx);
    const services = await readServiceStates(tx);
    return {
      jobs,
      outbox,
      workers: {
        alive: workers.filter((worker) => worker.alive).length,
        dead: workers.filter((worker) => !worker.alive).length,
        deadAfterMs: options.deadAfterMs,
        list: workers,
      },
      reconcile: { byCollection: reconcile },
      flow: { limits: flow },
      services,
    };
  });
}

async function readJobs(tx: CommonQueryMethods): Promise<StatusReport["jobs"]> {
  const rows = await tx.any(sql.type(JobCountsRow)`
    select task, pending, scheduled, retrying, running, exhausted, dead, oldest_pending_age_s
    from job_counts order by task
  `);
  const byTask: Record<string, JobStateCounts> = {};
  for (const row of rows) {
    byTask[row.task] = {
      pending: row.pending,
      scheduled: row.scheduled,
      retrying: row.retrying,
      running: row.running,
      exhausted: row.exhausted,
      dead: row.dead,
      oldestPendingAgeSeconds: row.oldest_pending_age_s,
    };
  }
  const unknown = await tx.any(sql.type(UnknownTaskRow)`select task, jobs from unknown_tasks order by task`);
  const tasks = Object.values(byTask);
  return {
    pending: sum(tasks, "pending"),
    scheduled: sum(tasks, "scheduled"),
    retrying: sum(tasks, "retrying"),
    running: sum(tasks, "running"),
    exhausted: sum(tasks, "exhausted"),
    dead: sum(tasks, "dead"),
    oldestPendingAgeSeconds: oldest(tasks),
    byTask,
    unknownTasks: unknown.map((row) => ({ task: row.task, count: row.jobs })),
  };
}

async function readOutbox(tx: CommonQueryMethods): Promise<StatusReport["outbox"]> {
  const rows = await tx.any(sql.type(OutboxLagRow)`
    select collection, pending, retrying, in_flight, dead, oldest_pending_age_s
    from outbox_lag order by collection
  `);
  const byCollection: Record<string, OutboxCounts> = {};
  for (const row of rows) {
    byCollection[row.collection] = {
      pending: row.pending,
      retrying: row.retrying,
      inFlight: row.in_flight,
      dead: row.dead,
      oldestPendingAgeSeconds: row.oldest_pending_age_s,
    };
  }
  const collections = Object.values(byCollection);
  return {
    pending: sum(collections, "pending"),
    retrying: sum(collections, "retrying"),
    inFlight: sum(collections, "inFlight"),
    dead: sum(collections, "dead"),
    oldestPendingAgeSeconds: oldest(collections),
    byCollection,
  };
}

async function readWorkers(tx: CommonQueryMethods): Promise<WorkerState[]> {
  const rows = await tx.any(sql.type(WorkerRow)`
    select worker_id, hostname, pid, alive, heartbeat_at, heartbeat_age_s, running_jobs, concurrency
    from worker_status order by alive desc, hostname, pid, worker_id
  `);
  return rows.map((row) => ({
    id: row.worker_id,
    hostname: row.hostname,
    pid: row.pid,
    alive: row.alive,
    heartbeatAt: row.heartbeat_at.toISOString(),
    heartbeatAgeSeconds: row.heartbeat_age_s,
    runningJobs: row.running_jobs,
    concurrency: row.concurrency,
  }));
}

async function readReconcile(tx: CommonQueryMethods): Promise<Record<string, ReconcileState>> {
  const rows = await tx.any(sql.type(ReconcileRow)`
    select collection, drift, missing, extra, stale, repaired, finished_at, age_s
    from reconcile_latest order by collection
  `);
  return Object.fromEntries(
    rows.map((row) => [
      row.collection,
      {
        drift: row.drift,
        missing: row.missing,
        extra: row.extra,
        stale: row.stale,
        repaired: row.repaired,
        finishedAt: row.finished_at.toISOString(),
        ageSeconds: row.age_s,
      },
    ]),
  );
}

const FlowRow = z.object({
  kind: z.enum(["task", "queue"]),
  name: z.string(),
  max_running: z.number(),
  in_use: z.number(),
  waiting: z.number(),
  oldest_waiting_age_s: seconds,
});

async function readFlow(tx: CommonQueryMethods): Promise<FlowLimitState[]> {
  const rows = await tx.any(sql.type(FlowRow)`
    select kind, name, max_running, in_use, waiting, extract(epoch from now() - oldest_waiting_since)::float8 as oldest_waiting_age_s
    from flow_status order by kind, name
  `);
  return rows.map((row) => ({
    kind: row.kind,
    name: row.name,
    maxRunning: row.max_running,
    inUse: row.in_use,
    waiting: row.waiting,
    oldestWaitingAgeSeconds: row.oldest_waiting_age_s,
  }));
}

function sum<T, K extends keyof T>(items: T[], key: K): number {
  return items.reduce((total, item) => total + (item[key] as number), 0);
}

function oldest(items: Array<{ oldestPendingAgeSeconds: number | null }>): number | null {
  const ages = items.map((item) => item.oldestPendingAgeSeconds).filter((age): age is number => age !== null);
  return ages.length > 0 ? Math.max(...ages) : null;
}

async function readServiceStates(tx: CommonQueryMethods): Promise<StatusReport["services"]> {
  const services: StatusReport["services"] = {};
  for (const row of await readServices(tx)) {
    services[row.name] = {
      rate: row.rate,
      state: row.state,
      since: row.state_since.toISOString(),
      consecutiveFailures: row.consecutive_failures,
      reopenAt: row.reopen_at?.toISOString() ?? null,
      pausedUntil: row.paused_until?.toISOString() ?? null,
      probeInFlight: row.probe_in_flight,
      throttledSeconds: row.throttled_seconds,
      lastError: row.last_error,
    };
  }
  return services;
}
