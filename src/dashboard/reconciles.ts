import type { DatabasePool } from "slonik";
import type { Logger } from "../log.ts";
import type { QdrantClient, ReadConsistency } from "../outbox/qdrant.ts";
import type { DriftReport } from "../outbox/reconciler.ts";
import type { Sync } from "../outbox/sync.ts";
import { describeError } from "../runtime/errors.ts";
import { reconcileAudited } from "./data.ts";
import { errorId } from "./errors.ts";

/** A reconcile started from the dashboard: running (no finishedAt), done (a report) or failed (an error id). */
export interface ReconcileRun {
  collection: string;
  repair: boolean;
  actor: string;
  startedAt: string;
  finishedAt: string | null;
  progress: { phase: "qdrant" | "postgres"; done: number; total: number | null } | null;
  report: DriftReport | null;
  /** The id the failure's detail is logged under; the page shows only this. */
  errorId: string | null;
}

interface BackgroundReconcilesOptions {
  pool: DatabasePool;
  qdrant: QdrantClient;
  readConsistency: ReadConsistency | undefined;
  log: Logger;
}

/**
 * Reconciles run in the background, so the request that starts one answers at once and the
 * syncs page shows its progress and result; one at a time per collection in this process (a
 * second one of the same sync is refused, not queued). They read Qdrant with the relay's and
 * the reconciler's read consistency (QDRANT_READ_CONSISTENCY).
 */
export class BackgroundReconciles {
  private readonly runs = new Map<string, ReconcileRun>();
  private readonly pending = new Set<Promise<void>>();
  private readonly stopping = new AbortController();

  private readonly options: BackgroundReconcilesOptions;

  constructor(options: BackgroundReconcilesOptions) {
    this.options = options;
  }

  /** Starts a reconcile of this sync; false when one started here is still running. */
  start(sync: Sync, repair: boolean, actor: string): boolean {
    if (this.runs.get(sync.collection)?.finishedAt === null) return false;
    const run: ReconcileRun = { collection: sync.collection, repair, actor, startedAt: new Date().toISOString(), finishedAt: null, progress: null, report: null, errorId: null };
    this.runs.set(sync.collection, run);
    const { pool, qdrant, readConsistency, log } = this.options;
    const done = reconcileAudited(pool, qdrant, actor, sync, repair, {
      ...(readConsistency === undefined ? {} : { readConsistency }),
      onProgress: (progress) => (run.progress = progress),
      signal: this.stopping.signal,
    })
      .then(
        (report) => {
          run.report = report;
        },
        (error) => {
          run.errorId = errorId();
          log.error({ errorId: run.errorId, collection: sync.collection, repair, error: describeError(error) }, "reconcile started from the dashboard failed");
        },
      )
      .finally(() => {
        run.finishedAt = new Date().toISOString();
        this.pending.delete(done);
      });
    this.pending.add(done);
    return true;
  }

  /** The latest run per collection. */
  list(): ReconcileRun[] {
    return [...this.runs.values()];
  }

  /** Stops the running reconciles at their next page and waits for them. */
  async close(): Promise<void> {
    this.stopping.abort();
    await Promise.all(this.pending);
  }
}
