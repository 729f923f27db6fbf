import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { listChanges, retryDead } from "../../outbox/outbox.ts";
import { withContext } from "../context.ts";
import { formatTable } from "../table.ts";

export class UsageError extends Error {}

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
  const bad = ids.find((id) => !/^[1-9][0-9]{0,18}$/.test(id));
  if (bad) throw new UsageError(`outbox retry: ${JSON.stringify(bad)} is not an outbox id`);
  const count = await withContext(config, log, 1, (context) => retryDead(context.appPool, all ? undefined : ids, collection));
  console.log(`${count} dead change${count === 1 ? "" : "s"} put back in line for the relay`);
  return ids.length > 0 && count < ids.length ? 1 : 0;
}
