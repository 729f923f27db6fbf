import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { readStatus, type JobStateCounts, type OutboxCounts, type StatusReport } from "../../ops/status.ts";
import { withContext } from "../context.ts";
import { formatAge as age } from "../duration.ts";
import { formatTable } from "../table.ts";

/** `pgconverge status [--json]`: jobs, dead letters, outbox lag, workers and the last reconcile, at a glance. */
export async function statusCommand(config: Config, log: Logger, flags: { json: boolean }): Promise<number> {
  const report = await withContext(config, log, 1, (context) => readStatus(context.appPool, { deadAfterMs: config.WORKER_DEAD_AFTER_MS }));
  console.log(flags.json ? JSON.stringify(report) : formatStatus(report));
  return 0;
}

export function formatStatus(report: StatusReport): string {
  return [jobsSection(report), outboxSection(report), workersSection(report), reconcileSection(report), flowSection(report), servicesSection(report)]
    .filter((section) => section !== null)
    .join("\n\n");
}

/** Fleet-wide concurrency limits; left out when none is set. */
function flowSection({ flow }: StatusReport): string | null {
  if (flow.limits.length === 0) return null;
  const rows = flow.limits.map((limit) => [
    limit.kind,
    limit.name,
    `${limit.inUse}/${limit.maxRunning}`,
    String(limit.waiting),
    age(limit.oldestWaitingAgeSeconds),
  ]);
  return `flow limits (fleet-wide)\n${formatTable(["kind", "name", "running", "waiting", "oldest waiting"], rows)}`;
}

function jobsSection(report: StatusReport): string {
  const table = jobsTable(report);
  const unknown = report.jobs.unknownTasks.map(
    ({ task, count }) => `no live worker has task ${task}: ${count} due ${count === 1 ? "job waits" : "jobs wait"} for a worker that does`,
  );
  return [table, ...unknown].join("\n");
}

function jobsTable({ jobs }: StatusReport): string {
  const tasks = Object.entries(jobs.byTask);
  if (tasks.length === 0) return "jobs: none queued, none dead";
  const row = (name: string, counts: JobStateCounts) => [
    name,
    ...[counts.pending, counts.scheduled, counts.retrying, counts.running, counts.exhausted, counts.dead].map(String),
    age(counts.oldestPendingAgeSeconds),
  ];
  const rows = tasks.map(([task, counts]) => row(task, counts));
  if (tasks.length > 1) rows.push(row("(all)", jobs));
  return `jobs\n${formatTable(["task", "pending", "scheduled", "retrying", "running", "exhausted", "dead", "oldest pending"], rows)}`;
}

function outboxSection({ outbox }: StatusReport): string {
  const collections = Object.entries(outbox.byCollection);
  if (collections.length === 0) return "outbox: empty, Qdrant has every change";
  const row = (name: string, counts: OutboxCounts) => [
    name,
    ...[counts.pending, counts.retrying, counts.inFlight, counts.dead].map(String),
    age(counts.oldestPendingAgeSeconds),
  ];
  const rows = collections.map(([collection, counts]) => row(collection, counts));
  if (collections.length > 1) rows.push(row("(all)", outbox));
  return `outbox\n${formatTable(["collection", "pending", "retrying", "in flight", "dead", "oldest pending"], rows)}`;
}

function workersSection({ workers }: StatusReport): string {
  const threshold = `dead after ${age(workers.deadAfterMs / 1000)} without a heartbeat`;
  if (workers.list.length === 0) return `workers: none registered (${threshold})`;
  const rows = workers.list.map((worker) => [
    worker.id,
    worker.alive ? "alive" : "dead",
    `${age(worker.heartbeatAgeSeconds)} ago`,
    `${worker.runningJobs}/${worker.concurrency}`,
  ]);
  return `workers: ${workers.alive} alive, ${workers.dead} dead (${threshold})\n${formatTable(["worker", "state", "last heartbeat", "running"], rows)}`;
}

function reconcileSection({ reconcile }: StatusReport): string {
  const runs = Object.entries(reconcile.byCollection);
  if (runs.length === 0) return "reconcile: never run";
  const rows = runs.map(([collection, run]) => [
    collection,
    String(run.drift),
    String(run.missing),
    String(run.extra),
    String(run.stale),
    run.repaired ? "yes" : "no",
    `${age(run.ageSeconds)} ago`,
  ]);
  return `last reconcile\n${formatTable(["collection", "drift", "missing", "extra", "stale", "repaired", "finished"], rows)}`;
}

/** External services' flow control; no section while no worker has called or configured one. */
function servicesSection({ services }: StatusReport): string | null {
  const names = Object.entries(services);
  if (names.length === 0) return null;
  const now = Date.now();
  const rows = names.map(([name, service]) => [
    name,
    service.rate === null ? "none" : `${service.rate}/s`,
    service.state.replace("_", "-"),
    `${age((now - Date.parse(service.since)) / 1000)} ago`,
    service.pausedUntil === null ? "-" : `${age((Date.parse(service.pausedUntil) - now) / 1000)} more`,
    age(service.throttledSeconds),
  ]);
  return `services\n${formatTable(["service", "rate", "circuit", "since", "paused", "throttled"], rows)}`;
}
