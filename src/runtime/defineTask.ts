import type { Job } from "graphile-worker";
import type { CommonQueryMethods, DatabaseTransactionConnection } from "slonik";
import type { z } from "zod";
import { taskFlowProblem, type TaskFlowOptions } from "../flow/options.ts";
import type { CallServiceOptions } from "../flow/serviceGate.ts";
import type { Logger } from "../log.ts";

/**
 * What `apply` may return to be kept in the job's history row (job_history.result, shown by
 * `pgconverge jobs show` and the dashboard): any JSON value of at most JOB_RESULT_MAX_BYTES
 * bytes as JSON text. Meant for a small summary ("rows written: 3", an id), not data.
 */
export type JobResult = string | number | boolean | null | JobResult[] | { [key: string]: JobResult };

/**
 * The cap on a result's JSON text as Postgres prints the jsonb value (`octet_length(result::text)`:
 * ", " and ": " between members), bytes. A larger (or non-JSON) result is a bug in the task,
 * so it fails the job as permanent (dead letter) rather than being cut. The same cap, measured
 * the same way, is a CHECK constraint of job_history (sql/000004; see runtime/jobResult.ts).
 */
export const JOB_RESULT_MAX_BYTES = 4096;

/**
 * What a second enqueue with the same `jobKey` does to the job already waiting under it
 * (graphile-worker's job_key_mode):
 * - `"replace"` (the default): the waiting job takes the new payload and the new `runAt`, so a
 *   burst of enqueues keeps pushing the run back (debounce: it runs once the burst is quiet);
 * - `"preserve_run_at"`: the waiting job takes the new payload but keeps its `runAt`, so a burst
 *   coalesces into one run at most the first enqueue's delay later (throttle).
 * Either way a job with the key that is already running finishes (it is not dead-lettered) and
 * the new one is queued as well; it may start while the first still runs unless both share a
 * `queueName`. graphile-worker's third mode, `unsafe_dedupe`, is not offered:
 * it drops the enqueue while a stale run is in progress, and it bumps the running job's
 * revision, which pgconverge reads as the job having been taken from its worker.
 */
export type JobKeyMode = "replace" | "preserve_run_at";

/** Options of an enqueued job (graphile-worker's add_job); every field is optional. */
export interface FollowUpJobSpec {
  /** Jobs of one named queue run one at a time, in order (strict order per entity). Default: none, run in parallel. */
  queueName?: string;
  /** Not run before this time (a delay). Default: now. */
  runAt?: Date;
  /** Attempts before the job is dead-lettered, 1 to 32,767. Default: graphile-worker's 25. */
  maxAttempts?: number;
  /** At most one waiting job per key: a second enqueue updates it (see jobKeyMode) instead of adding one. */
  jobKey?: string;
  /** What an enqueue does to a waiting job with the same jobKey; needs jobKey. Default `"replace"`. */
  jobKeyMode?: JobKeyMode;
  /** Lower runs first, -32,768 to 32,767. Default 0. */
  priority?: number;
}

/**
 * What a task's contexts receive as `services`: the long-lived clients (HTTP, mail, an LLM
 * client) created once per worker and handed to every run, because a client per run would
 * leak sockets. A task states the services it needs with `defineTask.withServices<S>()`;
 * the worker that runs it must be given them (checked at compile time by runWorker).
 */
export type NoServices = Record<never, never>;

export interface PrepareContext<Payload, Services = NoServices> {
  payload: Payload;
  job: Job;
  /** Fires when the deadline passes or the worker shuts down; pass it to every I/O call. */
  signal: AbortSignal;
  /**
   * The pool, for reads that prepare needs (e.g. the texts to embed). Each query runs on its
   * own; writes belong in apply, where they commit with the job.
   */
  db: CommonQueryMethods;
  /** The services of the worker running the task (see NoServices). */
  services: Services;
  log: Logger;
  /**
   * Calls an external service under the fleet's flow control for it (flow_services): its rate
   * limit (FLOW_SERVICE_RATES, cost units per second), the pause a 429/Retry-After asked for,
   * and its circuit breaker. When the call may not go yet, the job is deferred (parked, no
   * connection, attempt not counted) instead of failed. `fn` gets a signal that fires with the
   * job's or at the call's own deadline (what is left of prepare's, less a reserve to record the
   * outcome): no answer by then is the service's timeout, counted by its breaker.
   * `ctx.callService("ollama", (signal) => embed(texts, signal), { cost: texts.length })`.
   */
  callService<T>(name: string, fn: (signal: AbortSignal) => Promise<T>, options?: CallServiceOptions): Promise<T>;
}

export interface ApplyContext<Payload, Prepared, Services = NoServices> {
  payload: Payload;
  job: Job;
  /** What prepare returned. */
  prepared: Prepared;
  /** The job's one transaction: everything written through it commits with the applied-record. */
  tx: DatabaseTransactionConnection;
  /** Enqueues a job in this same transaction (graphile_worker.add_job), so it exists iff this job applied. */
  addJob(identifier: string, payload: unknown, spec?: FollowUpJobSpec): Promise<void>;
  /** The services of the worker running the task (see NoServices). */
  services: Services;
  log: Logger;
}

/** One job's part of a set-based apply. */
export interface BatchItem<Payload, Prepared> {
  payload: Payload;
  job: Job;
  /** What prepare returned for this job. */
  prepared: Prepared;
}

export interface ApplyBatchContext<Payload, Prepared, Services = NoServices> {
  /** The jobs whose writes this call makes, each held by this worker and not yet applied. */
  items: Array<BatchItem<Payload, Prepared>>;
  /** The batch's one transaction: it commits the items' writes with their applied-records. */
  tx: DatabaseTransactionConnection;
  /** Enqueues a job in this same transaction, so it exists iff the items applied. */
  addJob(identifier: string, payload: unknown, spec?: FollowUpJobSpec): Promise<void>;
  /** The services of the worker running the task (see NoServices). */
  services: Services;
  log: Logger;
}

interface TaskDefinitionBase<Payload, Prepared, Services, Input> {
  /**
   * Validates every payload when the job runs (jobs inserted from SQL cannot be trusted); a
   * payload that fails is a permanent failure (dead letter, no retry). Its input type is what
   * `addJob(db, task, payload)` accepts.
   */
  payload: z.ZodType<Payload, z.ZodTypeDef, Input>;
  /**
   * The task's identifier, for `addJob(db, task, payload)`. Optional: a task file's name, or
   * its key in runWorker's `tasks`, names it too; when given, it must agree with them.
   */
  identifier?: string;
  /**
   * External I/O (HTTP, LLM calls). Runs with no database transaction open, under the task's
   * deadline; it must honour `signal`. Whatever it returns is handed to apply.
   */
  prepare?(context: PrepareContext<Payload, Services>): Promise<Prepared>;
  /** Deadline of prepare in ms; defaults to TASK_TIMEOUT_MS. */
  timeoutMs?: number;
  /**
   * Fleet-wide concurrency: `{ concurrency: 4 }` runs at most 4 of this task's jobs at once
   * across every worker; `{ queue: "gpu" }` counts them against a limit shared with other tasks,
   * sized by the worker (runWorker's flow.queues, FLOW_QUEUE_CONCURRENCY). The worker's
   * settings (flow.concurrency, FLOW_TASK_CONCURRENCY) override concurrency. Default: no limit.
   */
  flow?: TaskFlowOptions;
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
export type TaskDefinition<Payload = unknown, Prepared = undefined, Services = NoServices, Input = unknown> = TaskDefinitionBase<
  Payload,
  Prepared,
  Services,
  Input
> &
  (
    | {
        /**
         * Database writes only: runs in ONE transaction that also records the job as applied.
         * May return a small JobResult, recorded in the job's history row in that transaction.
         */
        apply(context: ApplyContext<Payload, Prepared, Services>): Promise<JobResult | void>;
        applyBatch?: never;
      }
    | {
        apply?: never;
        /** Database writes of several jobs at once, in the transaction that records them as applied. */
        applyBatch(context: ApplyBatchContext<Payload, Prepared, Services>): Promise<void>;
      }
  );

const TASK_DEFINITION = Symbol.for("pgconverge.taskDefinition");
/** Type-only marks: the services a task needs and the payload it accepts (no runtime value). */
declare const NEEDS: unique symbol;
declare const ACCEPTS: unique symbol;

/** What defineTask returns; pass it to runWorker's `tasks` or default-export it from a task file. */
export type DefinedTask<Payload = unknown, Prepared = unknown, Services = NoServices, Input = unknown> = TaskDefinition<
  Payload,
  Prepared,
  Services,
  Input
> & {
  readonly [TASK_DEFINITION]: true;
  // Methods, so that a task needing services still fits where any task is expected.
  [NEEDS]?(services: Services): void;
  [ACCEPTS]?(payload: Input): void;
};

/** Any defined task, whatever its payload and services. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyTask = DefinedTask<any, any, any, any>;

/** The services a task needs. */
export type ServicesOf<Task> = Task extends { [NEEDS]?(services: infer Services): void } ? Services : never;

/** The payload a task accepts at enqueue (its schema's input type). */
export type PayloadOf<Task> = Task extends { [ACCEPTS]?(payload: infer Input): void } ? Input : never;

function define(definition: TaskDefinition<unknown, unknown, unknown, unknown>): AnyTask {
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
  if (definition.flow !== undefined && taskFlowProblem(definition.flow)) throw new TypeError(`defineTask: ${taskFlowProblem(definition.flow)}`);
  if (definition.identifier !== undefined && !TASK_IDENTIFIER.test(definition.identifier)) {
    throw new TypeError(`defineTask: identifier must be letters, digits and _, not starting with a digit (got ${JSON.stringify(definition.identifier)})`);
  }
  return Object.freeze({ ...definition, [TASK_DEFINITION]: true as const });
}

/** Task identifiers: what a task file may be named (graphile-worker's convention). */
export const TASK_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Declares a task that needs no services. A task file default-exports the result (its file
 * name is the identifier), or an application passes it to runWorker's `tasks`.
 *
 * ```ts
 * export default defineTask({
 *   payload: z.object({ documentId: z.string().uuid() }),
 *   async prepare({ payload, signal }) { return fetchSomething(payload, { signal }); },
 *   async apply({ tx, prepared }) { await tx.query(sql.unsafe`insert ...`); },
 * });
 * ```
 *
 * A task that needs services states them, and gets them typed:
 * `defineTask.withServices<{ mail: Mailer }>()({ payload, async apply({ services }) { ... } })`.
 */
export function defineTask<Payload, Prepared = undefined, Input = Payload>(
  definition: TaskDefinition<Payload, Prepared, NoServices, Input>,
): DefinedTask<Payload, Prepared, NoServices, Input> {
  return define(definition as TaskDefinition<unknown, unknown, unknown, unknown>) as DefinedTask<Payload, Prepared, NoServices, Input>;
}

/**
 * `defineTask.withServices<Services>()(definition)`: a task whose contexts carry `services`
 * of this type. Curried because TypeScript cannot take Services explicitly while inferring
 * the payload type from the schema.
 */
defineTask.withServices = function withServices<Services extends object>() {
  return <Payload, Prepared = undefined, Input = Payload>(
    definition: TaskDefinition<Payload, Prepared, Services, Input>,
  ): DefinedTask<Payload, Prepared, Services, Input> =>
    define(definition as TaskDefinition<unknown, unknown, unknown, unknown>) as DefinedTask<Payload, Prepared, Services, Input>;
};

export function isDefinedTask(value: unknown): value is AnyTask {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[TASK_DEFINITION] === true;
}
