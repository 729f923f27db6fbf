import type { DatabasePool } from "slonik";
import { z } from "zod";
import { defineTask, type DefinedTask } from "../runtime/defineTask.ts";
import { readOwner, recordReconcileRun } from "./outbox.ts";
import type { QdrantClient, ReadConsistency } from "./qdrant.ts";
import { reconcile, type DriftReport } from "./reconciler.ts";
import type { Sync } from "./sync.ts";

export const RECONCILE_TASK = "pgconverge_reconcile";

/**
 * The periodic reconcile (graphile-worker cron): compares Qdrant with Postgres for every
 * declared sync and turns every difference into an outbox change. The comparison is prepare
 * (external I/O, bounded memory, idempotent repairs); recording the runs is the apply transaction.
 */
export function createReconcileTask(options: { pool: DatabasePool; qdrant: QdrantClient; syncs: readonly Sync[]; readConsistency?: ReadConsistency }): DefinedTask {
  return defineTask({
    payload: z.object({}).passthrough(),
    timeoutMs: 60 * 60_000,
    async prepare({ signal }) {
      const owner = await readOwner(options.pool);
      const reports: DriftReport[] = [];
      for (const sync of options.syncs) reports.push(await reconcile({ pool: options.pool, qdrant: options.qdrant, sync, owner, repair: true, signal, ...(options.readConsistency === undefined ? {} : { readConsistency: options.readConsistency }) }));
      return reports;
    },
    async apply({ tx, prepared, log }) {
      for (const report of prepared) {
        await recordReconcileRun(tx, report);
        const drift = report.missing + report.extra + report.stale;
        log[drift > 0 ? "warn" : "info"]({ ...report }, drift > 0 ? "drift found and queued for repair" : "Qdrant matches Postgres");
      }
    },
  }) as DefinedTask;
}
