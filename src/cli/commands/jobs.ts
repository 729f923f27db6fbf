import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { JOB_STATES, listJobs, showJob, type JobDetail, type JobState } from "../../ops/jobs.ts";
import { withContext } from "../context.ts";
import { printable } from "../printable.ts";
import { formatTable } from "../table.ts";
import { checkIds, UsageError } from "../usage.ts";

/** `--state`'s value, checked against the states a job can be in. */
export function parseJobState(value: string | undefined): JobState | undefined {
  if (value === undefined) return undefined;
  if (!(JOB_STATES as readonly string[]).includes(value)) throw new UsageError(`--state must be one of ${JOB_STATES.join(", ")} (got ${JSON.stringify(value)})`);
  return value as JobState;
}

/** `pgconverge jobs [--task T] [--state S] [--limit N] [--json]`: queued jobs, then finished ones from the history. */
export async function jobsListCommand(config: Config, log: Logger, flags: { task?: string; state?: JobState; limit: number; json: boolean }): Promise<number> {
  const rows = await withContext(config, log, 1, (context) => listJobs(context.appPool, flags));
  if (flags.json) {
    console.log(JSON.stringify(rows));
    return 0;
  }
  if (rows.length === 0) {
    console.log("no jobs" + (flags.task === undefined ? "" : ` of task ${printable(flags.task)}`) + (flags.state === undefined ? "" : ` in state ${flags.state}`));
    return 0;
  }
  console.log(
    formatTable(
      ["job", "task", "state", "attempts", "enqueued", "finished", "duration", "last error"],
      rows.map((row) => [
        row.jobId,
        row.task,
        row.state,
        row.maxAttempts === null ? String(row.attempts) : `${row.attempts}/${row.maxAttempts}`,
        row.enqueuedAt,
        row.finishedAt ?? "-",
        row.durationMs === null ? "-" : `${Math.round(row.durationMs)} ms`,
        row.lastError ?? "",
      ]),
    ),
  );
  return 0;
}

/** `pgconverge jobs show ID [--json]`: one job's queue row, payload, failures, history and dead letters. */
export async function jobsShowCommand(config: Config, log: Logger, ids: string[], flags: { json: boolean }): Promise<number> {
  if (ids.length !== 1) throw new UsageError("jobs show takes one job id");
  checkIds("jobs show", "a job id", ids);
  const detail = await withContext(config, log, 1, (context) => showJob(context.appPool, ids[0]!));
  if (detail === null) {
    console.error(`pgconverge: no job ${ids[0]} (never existed, or finished before the history's retention)`);
    return 1;
  }
  console.log(flags.json ? JSON.stringify(detail) : formatJob(detail));
  return 0;
}

export function formatJob(detail: JobDetail): string {
  const lines = [`job ${detail.jobId} (${detail.task})`];
  const { queued } = detail;
  if (queued) {
    lines.push(`  state: ${queued.state}, attempts ${queued.attempts}/${queued.maxAttempts}, enqueued ${queued.enqueuedAt}, due ${queued.runAt}`);
    if (queued.lastError) lines.push(`  last error: ${queued.lastError}`);
    lines.push(`  payload: ${JSON.stringify(queued.payload)}`);
  }
  if (detail.failures) {
    const { failures, firstFailedAt, lastFailedAt, lastError } = detail.failures;
    lines.push(`  failed ${failures} time(s), first ${firstFailedAt}, last ${lastFailedAt}: ${lastError}`);
  }
  for (const record of detail.history) {
    const duration = record.durationMs === null ? "" : ` in ${Math.round(record.durationMs)} ms`;
    lines.push(`  ${record.outcome} ${record.finishedAt}${duration} after ${record.attempts} attempt(s) (enqueued ${record.enqueuedAt})`);
    if (record.lastError) lines.push(`    error: ${record.lastError}`);
    if (record.result !== null && record.result !== undefined) lines.push(`    result: ${JSON.stringify(record.result)}`);
  }
  for (const dead of detail.deadLetters) {
    lines.push(`  dead letter ${dead.id} (${dead.reason}, ${dead.attempts}/${dead.maxAttempts} attempts, ${dead.deadAt}): ${dead.lastError}`);
    lines.push(`    payload: ${JSON.stringify(dead.payload)}`);
  }
  return lines.map((line) => printable(line)).join("\n");
}
