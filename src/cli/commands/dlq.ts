import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { discardDeadLetters, listDeadLetters, retryDeadLetters, type DeadLetterSelection } from "../../ops/deadLetters.ts";
import { withContext } from "../context.ts";
import { printable } from "../printable.ts";
import { formatAge } from "../duration.ts";
import { formatTable } from "../table.ts";
import { checkIds, UsageError } from "../usage.ts";

/** `pgconverge dlq list [--task T] [--limit N] [--json]`: dead letters, newest first. */
export async function dlqListCommand(config: Config, log: Logger, flags: { task?: string; limit: number; json: boolean }): Promise<number> {
  const rows = await withContext(config, log, 1, (context) =>
    listDeadLetters(context.appPool, { limit: flags.limit, ...(flags.task === undefined ? {} : { task: flags.task }) }),
  );
  if (flags.json) {
    console.log(JSON.stringify(rows));
    return 0;
  }
  if (rows.length === 0) {
    console.log(flags.task === undefined ? "no dead letters" : `no dead letters of task ${printable(flags.task)}`);
    return 0;
  }
  console.log(
    formatTable(
      ["id", "task", "reason", "attempts", "dead for", "last error"],
      rows.map((row) => [row.id, row.task, row.reason, `${row.attempts}/${row.maxAttempts}`, formatAge(row.deadForSeconds), row.lastError]),
    ),
  );
  return 0;
}

/**
 * `pgconverge dlq retry <id>... | --all [--task T]`: re-enqueues dead letters (after their
 * cause is fixed). Ids that are not dead letters (any more) are reported on stderr and make
 * the exit code 1, as in `outbox retry`; the others are still retried.
 */
export async function dlqRetryCommand(config: Config, log: Logger, ids: string[], flags: { all: boolean; task?: string }): Promise<number> {
  if (flags.all === ids.length > 0) throw new UsageError("dlq retry takes dead letter ids or --all");
  if (flags.task !== undefined && !flags.all) throw new UsageError("dlq retry: --task goes with --all");
  checkIds("dlq retry", "a dead letter id", ids);
  const selection: DeadLetterSelection = flags.all ? { all: true, ...(flags.task === undefined ? {} : { task: flags.task }) } : { ids };
  const retried = await withContext(config, log, 1, (context) => retryDeadLetters(context.appPool, selection));
  for (const row of retried) console.log(`dead letter ${row.deadLetterId} (${printable(row.task)}) re-enqueued as job ${row.jobId}`);
  if (flags.all && retried.length === 0) console.log("no dead letters to retry");
  return reportMissing(ids, retried.map((row) => row.deadLetterId));
}

/** `pgconverge dlq discard <id>...`: deletes dead letters for good. */
export async function dlqDiscardCommand(config: Config, log: Logger, ids: string[]): Promise<number> {
  if (ids.length === 0) throw new UsageError("dlq discard takes dead letter ids");
  checkIds("dlq discard", "a dead letter id", ids);
  const discarded = await withContext(config, log, 1, (context) => discardDeadLetters(context.appPool, ids));
  for (const id of discarded) console.log(`dead letter ${id} discarded`);
  return reportMissing(ids, discarded);
}

/** One stderr line naming the ids that were not there (never existed, or retried/discarded already). */
function reportMissing(requested: string[], done: string[]): number {
  const found = new Set(done);
  const missing = [...new Set(requested)].filter((id) => !found.has(id));
  if (missing.length === 0) return 0;
  console.error(`pgconverge: no dead letter ${missing.join(", ")} (never existed, or already retried or discarded)`);
  return 1;
}
