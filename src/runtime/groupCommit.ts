import type { Job } from "graphile-worker";
import type { DatabasePool, DatabaseTransactionConnection } from "slonik";
import { runtimeEvents } from "./events.ts";
import { describeError } from "./errors.ts";
import { claimBatch } from "./graphileJobs.ts";
import { setHistoryResults } from "./queries.ts";

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

/** One job's writes, made on its own; returns the JSON text of its result for the history, or null. */
export type Apply = (tx: DatabaseTransactionConnection) => Promise<string | null>;
/** The writes of several jobs (one item each), made by one call. */
export type BatchApply<Item> = (tx: DatabaseTransactionConnection, items: Item[]) => Promise<void>;

/** What a job submitted: its own apply, or its item for a set-based apply shared with others. */
type Writes = { apply: Apply } | { applyBatch: BatchApply<unknown>; item: unknown };

interface Waiting {
  job: Job;
  writes: Writes;
  resolve(outcome: ApplyOutcome): void;
  reject(error: unknown): void;
}

/**
 * Group commit: the apply phases of jobs that finish prepare at about the same time share one
 * transaction, so a queue of small transactional jobs is not capped at one commit (and one
 * WAL flush, and a dozen round trips) per job. Each job still gets what a transaction of its
 * own gave it:
 * - its lock check and applied-record are in the transaction that holds its writes (one
 *   statement for the whole batch), so the writes commit exactly once and only while the job
 *   is still this worker's, and so is its history row (job_history; what apply returned is
 *   added at the end, in one more statement, only when some job returned something);
 * - its promise settles only after COMMIT returns, so graphile-worker never completes a job
 *   whose writes are not durable;
 * - a failure is its own: if anything in the batch fails (an apply throws, a deferred
 *   constraint fails at COMMIT, the connection drops), the batch has committed nothing and
 *   each of its jobs runs again in a transaction of its own, where a failure stays with the
 *   job that caused it and goes through the usual retry or dead letter.
 * This replaces a savepoint per job: savepoints cost two round trips per job on every batch
 * to save work only on the rare batch that fails. An apply may therefore run twice (once in
 * the failed batch, once alone); like a retry, only one run commits.
 * Jobs submitted as items of one set-based apply (a task's applyBatch) make one call per batch.
 * Batches form without waiting: jobs that arrive while a batch is in flight make up the next.
 */
export class GroupCommitter {
  private readonly waiting: Waiting[] = [];
  private inFlight = 0;
  private startScheduled = false;

  private readonly config: GroupCommitConfig;

  constructor(config: GroupCommitConfig) {
    this.config = config;
    if (!(Number.isInteger(config.maxBatchSize) && config.maxBatchSize >= 1)) throw new RangeError("maxBatchSize must be a positive integer");
    if (!(Number.isInteger(config.maxConcurrentBatches) && config.maxConcurrentBatches >= 1)) {
      throw new RangeError("maxConcurrentBatches must be a positive integer");
    }
  }

  /** Runs `apply` for `job` in the next batch; settles once that batch has committed or failed. */
  submit(job: Job, apply: Apply): Promise<ApplyOutcome> {
    return this.enqueue(job, { apply });
  }

  /**
   * Hands `item` to `applyBatch` in the next batch, in one call with the items of the other
   * jobs submitted with the same `applyBatch`; settles once that batch has committed or failed.
   */
  submitItem<Item>(job: Job, applyBatch: BatchApply<Item>, item: Item): Promise<ApplyOutcome> {
    return this.enqueue(job, { applyBatch: applyBatch as BatchApply<unknown>, item });
  }

  private enqueue(job: Job, writes: Writes): Promise<ApplyOutcome> {
    return new Promise<ApplyOutcome>((resolve, reject) => {
      this.waiting.push({ job, writes, resolve, reject });
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
    // its own, so a failure stays with the job that caused it. No more of those at once than
    // batches: each holds a connection, and the pool is shared with everything else.
    const rest = [...batch];
    const commitEachAlone = async () => {
      for (let next = rest.shift(); next; next = rest.shift()) await this.tryCommit([next]);
    };
    await Promise.all(Array.from({ length: Math.min(this.config.maxConcurrentBatches, rest.length) }, commitEachAlone));
  }

  /** Commits the batch and settles its jobs; false if the whole batch failed and it has more than one job. */
  private async tryCommit(batch: Waiting[]): Promise<boolean> {
    let committed = false;
    try {
      // The jobs settle as soon as COMMIT returns, before the connection is reset for reuse.
      await this.config.pool.connect(async (connection) => {
        const outcomes = await connection.transaction((tx) => this.applyAll(tx, batch));
        committed = true;
        this.settle(batch, outcomes);
      });
    } catch (error) {
      if (committed) return true; // only returning the connection failed
      if (batch.length > 1) {
        runtimeEvents.emit("batch:split", { size: batch.length, error: describeError(error) });
        return false;
      }
      batch[0]!.reject(error);
    }
    return true;
  }

  /** The batch transaction's statements: the claim, the applies of the jobs still this worker's, their history. */
  private async applyAll(tx: DatabaseTransactionConnection, batch: Waiting[]): Promise<Map<Waiting, ApplyOutcome>> {
    const outcomes = new Map<Waiting, ApplyOutcome>();
    const results: Array<{ job: Job; finishedAt: string; resultJson: string }> = [];
    const claims = await claimBatch(tx, batch.map((waiting) => waiting.job), this.config.applyTimeoutMs);
    const together = new Map<BatchApply<unknown>, { members: Waiting[]; items: unknown[] }>();
    for (const waiting of batch) {
      const claim = claims.get(waiting.job.id);
      const { writes } = waiting;
      if (claim === undefined) outcomes.set(waiting, "taken-over");
      else if (!claim.claimed) outcomes.set(waiting, "skipped");
      else if ("apply" in writes) {
        const resultJson = await writes.apply(tx);
        outcomes.set(waiting, "applied");
        if (resultJson !== null) results.push({ job: waiting.job, finishedAt: claim.finishedAt, resultJson });
      } else {
        const call = together.get(writes.applyBatch) ?? { members: [], items: [] };
        call.members.push(waiting);
        call.items.push(writes.item);
        together.set(writes.applyBatch, call);
      }
    }
    for (const [applyBatch, { members, items }] of together) {
      await applyBatch(tx, items);
      for (const member of members) outcomes.set(member, "applied");
    }
    await setHistoryResults(tx, results);
    return outcomes;
  }

  private settle(batch: Waiting[], outcomes: Map<Waiting, ApplyOutcome>): void {
    for (const waiting of batch) waiting.resolve(outcomes.get(waiting)!);
    const applied = [...outcomes.values()].filter((outcome) => outcome === "applied").length;
    runtimeEvents.emit("batch:committed", { size: batch.length, applied });
  }
}
