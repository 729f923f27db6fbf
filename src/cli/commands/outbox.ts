import { sql } from "slonik";
import { z } from "zod";
import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { retryDead } from "../../outbox/outbox.ts";
import { withContext } from "../context.ts";
import { formatTable } from "../table.ts";
import { checkIds, UsageError } from "../usage.ts";

export { UsageError } from "../usage.ts";

const OutboxRow = z.object({
  id: z.coerce.string(),
  collection: z.string(),
  point_id: z.string(),
  state: z.string(),
  version: z.coerce.number(),
  attempts: z.number(),
  age_s: z.number(),
  next_attempt_in_s: z.number().nullable(),
  last_error: z.string().nullable(),
});

/** `pgconverge outbox list [--dead] [--limit N] [--json]`: the changes not yet in Qdrant, oldest first. */
export async function outboxListCommand(config: Config, log: Logger, flags: { dead: boolean; limit: number; json: boolean }): Promise<number> {
  const rows = await withContext(config, log, 1, (context) =>
    context.appPool.any(sql.type(OutboxRow)`
      select id, collection, point_id, state, version, attempts,
             extract(epoch from now() - created_at)::float8 as age_s,
             case when state = 'pending' then extract(epoch from next_attempt_at - now())::float8 end as next_attempt_in_s,
             last_error
      from outbox
      ${flags.dead ? sql.fragment`where state = 'dead'` : sql.fragment``}
      order by (state = 'dead') desc, created_at
      limit ${flags.limit}
    `),
  );
  if (flags.json) {
    console.log(JSON.stringify(rows));
    return 0;
  }
  if (rows.length === 0) {
    console.log(flags.dead ? "no dead outbox changes" : "the outbox is empty: Qdrant has every change");
    return 0;
  }
  console.log(
    formatTable(
      ["id", "state", "point", "attempts", "age", "next try", "last error"],
      rows.map((row) => [
        row.id,
        row.state,
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

/** `pgconverge outbox retry <id>... | --all`: puts dead changes back in line (after the cause is fixed). */
export async function outboxRetryCommand(config: Config, log: Logger, ids: string[], all: boolean): Promise<number> {
  if (all === ids.length > 0) throw new UsageError("outbox retry takes dead change ids or --all");
  checkIds("outbox retry", "an outbox id", ids);
  const retried = await withContext(config, log, 1, (context) => retryDead(context.appPool, all ? undefined : ids));
  const count = retried.length;
  if (count > 0 || all) console.log(`${count} dead change${count === 1 ? "" : "s"} put back in line for the relay`);
  // As `dlq retry` does: one line naming the ids that were not dead changes, exit 1.
  const found = new Set(retried);
  const missing = [...new Set(ids)].filter((id) => !found.has(id));
  if (missing.length === 0) return 0;
  console.error(`pgconverge: no dead outbox change ${missing.join(", ")} (never existed, not dead, or already retried)`);
  return 1;
}
