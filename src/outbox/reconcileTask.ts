import type { DatabasePool } from "slonik";
import { z } from "zod";
import { defineTask, type DefinedTask } from "../runtime/defineTask.ts";
import type { QdrantClient } from "./qdrant.ts";
import { reconcile, recordReconcileRun } from "./reconciler.ts";

export const RECONCILE_TASK = "pgconverge_reconcile";

/**
 * The periodic reconcile (graphile-worker cron): compares Qdrant with Postgres and turns
 * every difference into an outbox change. The comparison is prepare (external I/O, bounded
 * memory, idempotent repairs); recording the run is the apply transaction.
 */
export function createReconcileTask(options: { pool: DatabasePool; qdrant: QdrantClient; collection: string }): DefinedTask {
  return defineTask({
    payload: z.object({}).passthrough(),
    timeoutMs: 60 * 60_000,
    prepare: ({ signal }) => reconcile({ ...options, repair: true, signal }),
    async apply({ tx, prepared, log }) {
      await recordReconcileRun(tx, prepared);
      const drift = prepared.missing + prepared.extra + prepared.stale;
      log[drift > 0 ? "warn" : "info"]({ ...prepared }, drift > 0 ? "drift found and queued for repair" : "Qdrant matches Postgres");
    },
  }) as DefinedTask;
}
