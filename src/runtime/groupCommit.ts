import type { Job } from "graphile-worker";
import type { DatabasePool, DatabaseTransactionConnection } from "slonik";
import { runtimeEvents } from "./events.ts";
import { claimLedgers, heldJobs, setApplyTimeout, unclaimLedger } from "./queries.ts";

/** How one job's apply ended in a committed batch. */
export type ApplyOutcome = "applied" | "skipped" | "taken-over";

export interface GroupCommitConfig {
  pool: DatabasePool;
  /** statement_timeout inside the batch transaction, ms. */
  applyTimeoutMs: number;
  /** Most applies committed by one transaction; 1 gives a transaction per job. */
  maxBatchSize: number;
  /** Batch transactions in flight at once, each on its own connection. */
  maxConcurrentBatches: number;
}

interface Waiting {
  job: Job;
  apply: (tx: DatabaseTransactionConnection) => Promise<void>;
  resolve(outcome: ApplyOutcome): void;
  reject(error: unknown): void;
}

/**
 * Group commit: the apply phases of jobs that finish prepare at about the same time share one
 * transaction, so a queue of small transactional jobs is not capped at one commit (and one
 * WAL flush) per job. Each job still gets exactly what a transaction of its own gave it:
 * - its lock check and applied-record are in the transaction that holds its writes, so the
 *   writes commit exactly once and only while the job is still this worker's;
 * - its apply runs in a savepoint: if it throws, only its own writes (and applied-record) are
 *   rolled back, it alone fails and is retried or dead-lettered; the others commit;
 * - its promise settles only after COMMIT returns, so graphile-worker never completes a job
 *   whose writes are not durable. If the batch transaction itself fails, it
 *   committed nothing, and each of its jobs is run again in a transaction of its own, so a
 *   job that breaks the commit (a deferred constraint) fails alone.
 * Batches form without waiting: jobs that arrive while a batch is in flight make up the next.
 */
export class GroupCommitter {
  private readonly waiting: Waiting[] = [];
  private inFlight = 0;
  private startScheduled = false;

  constructor(private readonly config: GroupCommitConfig) {
    if (!(Number.isInteger(config.maxBatchSize) && config.maxBatchSize >= 1)) throw new RangeError("maxBatchSize must be a positive integer");
    if (!(Number.isInteger(config.maxConcurrentBatches) && config.maxConcurrentBatches >= 1)) {
      throw new RangeError("maxConcurrentBatches must be a positive integer");
    }
  }

  /** Runs `apply` for `job` in the next batch; settles once that batch has committed or failed. */
  submit(job: Job, apply: (tx: DatabaseTransactionConnection) => Promise<void>): Promise<ApplyOutcome> {
    return new Promise<ApplyOutcome>((resolve, reject) => {
      this.waiting.push({ job, apply, resolve, reject });
      this.scheduleStart();
    });
  }

  private scheduleStart(): void {
    if (this.startScheduled || this.waiting.length === 0 || this.inFlight >= this.config.maxConcurrentBatches) return;
    this.startScheduled = true;
    // One turn of the event loop: every job finishing in this turn joins the batch.
    setImmediate(() => {
      this.startScheduled = false;
      if (this.waiting.length === 0 || this.inFlight >= this.config.maxConcurrentBatches) return;
      const batch = this.waiting.splice(0, this.config.maxBatchSize);
      this.inFlight++;
      void this.commit(batch).finally(() => {
        this.inFlight--;
        this.scheduleStart();
      });
      this.scheduleStart();
    });
  }

  private async commit(batch: Waiting[]): Promise<void> {
    const settled = await this.tryCommit(batch);
    if (settled) return;
    // The batch as a whole failed: nothing of it committed (or, if the commit's fate is
    // unknown, the ledger will say so). One job may have caused it, e.g. by violating a
    // deferred constraint that is only checked at COMMIT: each job now gets a transaction of
    // its own, so a failure stays with the job that caused it.
    await Promise.all(batch.map((waiting) => this.tryCommit([waiting])));
  }

  /** Commits the batch and settles its jobs; false if the whole batch failed and it has more than one job. */
  private async tryCommit(batch: Waiting[]): Promise<boolean> {
    const failures = new Map<Waiting, unknown>();
    const outcomes = new Map<Waiting, ApplyOutcome>();
    try {
      await this.config.pool.transaction(async (tx) => {
        // slonik re-runs this function after a serialization failure or deadlock: start clean.
        failures.clear();
        outcomes.clear();
        await setApplyTimeout(tx, this.config.applyTimeoutMs);
        const held = await heldJobs(tx, batch.map((waiting) => waiting.job));
        const mine = batch.filter((waiting) => held.has(waiting.job.id));
        const claimed = await claimLedgers(tx, mine.map((waiting) => waiting.job));
        for (const waiting of batch) {
          if (!held.has(waiting.job.id)) outcomes.set(waiting, "taken-over");
          else if (!claimed.has(waiting.job.id)) outcomes.set(waiting, "skipped");
        }
        for (const waiting of mine.filter((w) => claimed.has(w.job.id))) {
          try {
            await tx.transaction((savepoint) => waiting.apply(savepoint));
            outcomes.set(waiting, "applied");
          } catch (error) {
            await unclaimLedger(tx, waiting.job);
            failures.set(waiting, error);
          }
        }
      });
    } catch (error) {
      if (batch.length > 1) return false;
      batch[0]!.reject(error);
      return true;
    }
    const applied = [...outcomes.values()].filter((outcome) => outcome === "applied").length;
    runtimeEvents.emit("batch:committed", { size: batch.length, applied, failed: failures.size });
    for (const waiting of batch) {
      if (failures.has(waiting)) waiting.reject(failures.get(waiting));
      else waiting.resolve(outcomes.get(waiting)!);
    }
    return true;
  }
}
