import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { reconcile, recordReconcileRun, type DriftReport } from "../../outbox/reconciler.ts";
import { withContext } from "../context.ts";

/** `pgconverge reconcile [--repair] [--json]`: counts drift between Qdrant and Postgres; repairs it with --repair. */
export async function reconcileCommand(config: Config, log: Logger, flags: { repair: boolean; json: boolean }): Promise<number> {
  const progress = process.stderr.isTTY && !flags.json;
  const report = await withContext(config, log, 2, async (context) => {
    const result = await reconcile({
      pool: context.appPool,
      qdrant: context.qdrant,
      collection: config.QDRANT_COLLECTION,
      repair: flags.repair,
      ...(progress
        ? { onProgress: ({ phase, done, total }) => process.stderr.write(`\rreconcile: ${phase} ${done.toLocaleString("en")} / ${total.toLocaleString("en")} points   `) }
        : {}),
    });
    if (progress) process.stderr.write("\n");
    await recordReconcileRun(context.appPool, result);
    return result;
  });
  console.log(flags.json ? JSON.stringify(report) : summary(report));
  return 0;
}

function summary(report: DriftReport): string {
  const drift = report.missing + report.extra + report.stale;
  const counts = `missing ${report.missing}, extra ${report.extra}, stale ${report.stale}`;
  const scope = `${report.qdrantPoints} points in Qdrant, ${report.postgresPoints} embedded chunks in Postgres`;
  const inFlight = report.inFlight > 0 ? `; ${report.inFlight} changes already in flight` : "";
  if (drift === 0) return `collection ${report.collection}: no drift (${scope}${inFlight})`;
  return `collection ${report.collection}: ${counts} (${scope}${inFlight}); ${report.repaired ? "queued for repair" : "run with --repair to fix"}`;
}
