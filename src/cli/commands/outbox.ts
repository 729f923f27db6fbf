import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { listChanges, retryDead } from "../../outbox/outbox.ts";
import { withContext } from "../context.ts";
import { formatTable } from "../table.ts";
import { checkIds, UsageError } from "../usage.ts";

export { UsageError } from "../usage.ts";

/** `pgconverge outbox list [--dead] [--collection NAME] [--limit N] [--json]`: the changes not yet in Qdrant, dead first, then oldest first. */
export async function outboxListCommand(
  config: Config,
  log: Logger,
  flags: { dead: boolean; limit: number; json: boolean; collection?: string | undefined },
): Promise<number> {
  const rows = await withContext(config, log, 1, (context) => listChanges(context.appPool, flags));
  if (flags.json) {
    console.log(JSON.stringify(rows));
    return 0;
  }
  if (rows.length === 0) {
    console.log(flags.dead ? "no dead outbox changes" : "the outbox is empty: Qdrant has every change");
    return 0;
  }
  // The collection column only when there is more than one to tell apart.
  const collections = new Set(rows.map((row) => row.collection)).size > 1;
  console.log(
    formatTable(
      ["id", "state", ...(collections ? ["collection"] : []), "point", "attempts", "age", "next try", "last error"],
      rows.map((row) => [
        row.id,
        row.state,
        ...(collections ? [row.collection] : []),
        row.point_id,
        String(row.attempts),
        `${row.age_s.toFixed(1)}s`,
        row.next_attempt_in_s === null ? "-" : row.next_attempt_in_s <= 0 ? "now" : `${row.next_attempt_in_s.toFixed(1)}s`,
        row.last_error ?? "",
      ]),
    ),
  );
  return 0;
}

/** `pgconverge outbox retry <id>... | --all [--collection NAME]`: puts dead changes back in line (after the cause is fixed). */
export async function outboxRetryCommand(config: Config, log: Logger, ids: string[], all: boolean, collection?: string): Promise<number> {
  if (all === ids.length > 0) throw new UsageError("outbox retry takes dead change ids or --all");
  if (collection !== undefined && !all) throw new UsageError("outbox retry: --collection goes with --all");
  checkIds("outbox retry", "an outbox id", ids);
  const retried = await withContext(config, log, 1, (context) => retryDead(context.appPool, all ? undefined : ids, collection));
  const count = retried.length;
  if (count > 0 || all) console.log(`${count} dead change${count === 1 ? "" : "s"} put back in line for the relay`);
  // As `dlq retry` does: one line naming the ids that were not dead changes, exit 1.
  const found = new Set(retried);
  const missing = [...new Set(ids)].filter((id) => !found.has(id));
  if (missing.length === 0) return 0;
  console.error(`pgconverge: no dead outbox change ${missing.join(", ")} (never existed, not dead, or already retried)`);
  return 1;
}
