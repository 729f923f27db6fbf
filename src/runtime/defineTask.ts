import type { Job } from "graphile-worker";
import type { CommonQueryMethods, DatabaseTransactionConnection } from "slonik";
import type { z } from "zod";
import type { Logger } from "../log.ts";

/** Options of a follow-up job enqueued inside an apply transaction (graphile-worker's add_job). */
export interface FollowUpJobSpec {
  queueName?: string;
  runAt?: Date;
  maxAttempts?: number;
  jobKey?: string;
  priority?: number;
}

/**
 * Long-lived clients a task uses, created once per worker process and handed to every run
 * (a client per run would leak sockets). Empty here; an application declares its own
 * members by declaration merging, as the reference pipeline does in src/pipeline/services.ts:
 *
 * ```ts
 * declare module "../runtime/defineTask.ts" { interface TaskServices { mail: MailClient } }
 * ```
 */
export interface TaskServices {}

export interface PrepareContext<Payload> {
  payload: Payload;
  job: Job;
  /** Fires when the deadline passes or the worker shuts down; pass it to every I/O call. */
  signal: AbortSignal;
  /**
   * The pool, for reads that prepare needs (e.g. the texts to embed). Each query runs on its
   * own; writes belong in apply, where they commit with the job.
   */
  db: CommonQueryMethods;
  services: TaskServices;
  log: Logger;
}

export interface ApplyContext<Payload, Prepared> {
  payload: Payload;
  job: Job;
  /** What prepare returned. */
  prepared: Prepared;
  /** The job's one transaction: everything written through it commits with the applied-record. */
  tx: DatabaseTransactionConnection;
  /** Enqueues a job in this same transaction (graphile_worker.add_job), so it exists iff this job applied. */
  addJob(identifier: string, payload: unknown, spec?: FollowUpJobSpec): Promise<void>;
  services: TaskServices;
  log: Logger;
}

/** One job's part of a set-based apply. */
export interface BatchItem<Payload, Prepared> {
  payload: Payload;
  job: Job;
  /** What prepare returned for this job. */
  prepared: Prepared;
}

export interface ApplyBatchContext<Payload, Prepared> {
  /** The jobs whose writes this call makes, each held by this worker and not yet applied. */
  items: Array<BatchItem<Payload, Prepared>>;
  /** The batch's one transaction: it commits the items' writes with their applied-records. */
  tx: DatabaseTransactionConnection;
  /** Enqueues a job in this same transaction, so it exists iff the items applied. */
  addJob(identifier: string, payload: unknown, spec?: FollowUpJobSpec): Promise<void>;
  services: TaskServices;
  log: Logger;
}

interface TaskDefinitionBase<Payload, Prepared> {
  /** Validates every payload; a payload that fails is a permanent failure (dead letter, no retry). */
  payload: z.ZodType<Payload, z.ZodTypeDef, unknown>;
  /**
   * External I/O (HTTP, LLM calls). Runs with no database transaction open, under the task's
   * deadline; it must honour `signal`. Whatever it returns is handed to apply.
   */
  prepare?(context: PrepareContext<Payload>): Promise<Prepared>;
  /** Deadline of prepare in ms; defaults to TASK_TIMEOUT_MS. */
  timeoutMs?: number;
}

/**
 * A task has exactly one of:
 * - `apply`: one job's writes; the applies of jobs finishing together run one after the other
 *   in a shared transaction (group commit);
 * - `applyBatch`: the writes of all this task's jobs in that transaction, in one call, so they
 *   can be set-based (one `insert ... select from unnest(...)` instead of a statement per job).
 *   If the call fails, each of its jobs is applied again in a call and a transaction of its
 *   own, so a failure stays with the job that caused it.
 */
export type TaskDefinition<Payload = unknown, Prepared = undefined> = TaskDefinitionBase<Payload, Prepared> &
  (
    | {
        /** Database writes only: runs in ONE transaction that also records the job as applied. */
        apply(context: ApplyContext<Payload, Prepared>): Promise<void>;
        applyBatch?: never;
      }
    | {
        apply?: never;
        /** Database writes of several jobs at once, in the transaction that records them as applied. */
        applyBatch(context: ApplyBatchContext<Payload, Prepared>): Promise<void>;
      }
  );

const TASK_DEFINITION = Symbol.for("pgconverge.taskDefinition");

export type DefinedTask<Payload = unknown, Prepared = unknown> = TaskDefinition<Payload, Prepared> & {
  readonly [TASK_DEFINITION]: true;
};

/**
 * Declares a task; a file in `tasks/` default-exports the result and its file name is the
 * task identifier.
 *
 * ```ts
 * export default defineTask({
 *   payload: z.object({ documentId: z.uuid() }),
 *   async prepare({ payload, signal }) { return fetchSomething(payload, { signal }); },
 *   async apply({ tx, prepared }) { await tx.query(sql.unsafe`insert ...`); },
 * });
 * ```
 */
export function defineTask<Payload, Prepared = undefined>(
  definition: TaskDefinition<Payload, Prepared>,
): DefinedTask<Payload, Prepared> {
  const applies = [definition.apply, definition.applyBatch].filter((apply) => apply !== undefined);
  if (applies.length !== 1 || typeof applies[0] !== "function") {
    throw new TypeError("defineTask: give exactly one of apply and applyBatch, as a function");
  }
  if (definition.prepare !== undefined && typeof definition.prepare !== "function") {
    throw new TypeError("defineTask: prepare must be a function");
  }
  if (definition.timeoutMs !== undefined && !(Number.isInteger(definition.timeoutMs) && definition.timeoutMs > 0)) {
    throw new TypeError("defineTask: timeoutMs must be a positive integer");
  }
  return Object.freeze({ ...definition, [TASK_DEFINITION]: true as const });
}

export function isDefinedTask(value: unknown): value is DefinedTask {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[TASK_DEFINITION] === true;
}
