import { ConfigError, type Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { readOwner, recordReconcileRun } from "../../outbox/outbox.ts";
import { reconcile, type DriftReport } from "../../outbox/reconciler.ts";
import { withContext } from "../context.ts";
import type { Sync } from "../../outbox/sync.ts";
import { UsageError } from "./outbox.ts";

/**
 * `pgconverge reconcile [--collection NAME] [--repair] [--json]`: counts drift between Qdrant
 * and Postgres for every declared sync (or one); repairs it with --repair. --json prints one
 * JSON object per line, one line per collection.
 */
export async function reconcileCommand(config: Config, log: Logger, declared: readonly Sync[], flags: { repair: boolean; json: boolean; collection?: string | undefined }): Promise<number> {
  if (declared.length === 0) throw new ConfigError("reconcile: no syncs declared; declare them in the config file (syncs)");
  const syncs = flags.collection === undefined ? declared : declared.filter((sync) => sync.collection === flags.collection);
  if (syncs.length === 0) {
    throw new UsageError(`reconcile: no sync declares collection ${JSON.stringify(flags.collection)} (declared: ${declared.map((sync) => sync.collection).join(", ")})`);
  }
  const progress = process.stderr.isTTY && !flags.json;
  const reports = await withContext(config, log, 2, async (context) => {
    const owner = await readOwner(context.appPool);
    const results: DriftReport[] = [];
    for (const sync of syncs) {
      const result = await reconcile({
        pool: context.appPool,
        qdrant: await context.qdrant(),
        sync,
        owner,
        repair: flags.repair,
        readConsistency: config.QDRANT_READ_CONSISTENCY,
        ...(progress
          ? {
              onProgress: ({ phase, done, total }) =>
                process.stderr.write(`\rreconcile ${sync.collection}: ${phase} ${done.toLocaleString("en")}${total === null ? "" : ` / ${total.toLocaleString("en")}`} points   `),
            }
          : {}),
      });
      if (progress) process.stderr.write("\n");
      await recordReconcileRun(context.appPool, result);
      results.push(result);
    }
    return results;
  });
  for (const report of reports) console.log(flags.json ? JSON.stringify(report) : summary(report));
  return 0;
}

function summary(report: DriftReport): string {
  const drift = report.missing + report.extra + report.stale;
  const counts = `missing ${report.missing}, extra ${report.extra}, stale ${report.stale}`;
  const scope = `${report.qdrantPoints} points of this database in Qdrant, ${report.postgresPoints} rows in Postgres`;
  const inFlight = report.inFlight > 0 ? `; ${report.inFlight} changes already in flight` : "";
  const unowned =
    report.unowned > 0
      ? `; ${report.unowned} points without an owner (written before owners existed): never deleted by a repair, a repair adopts those with a row`
      : "";
  if (drift === 0) return `collection ${report.collection}: no drift (${scope}${inFlight})${unowned}`;
  return `collection ${report.collection}: ${counts} (${scope}${inFlight}); ${report.repaired ? "queued for repair" : "run with --repair to fix"}${unowned}`;
}
