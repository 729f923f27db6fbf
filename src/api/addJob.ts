import type { CommonQueryMethods } from "slonik";
import type { AnyTask, FollowUpJobSpec, PayloadOf } from "../runtime/defineTask.ts";
import { describeError } from "../runtime/errors.ts";
import { ADD_JOB_STATEMENT } from "../runtime/graphileJobs.ts";
import { runStatement, type Queryable } from "../db/queryable.ts";

export type { Queryable };

/** Options of an enqueued job (graphile-worker's add_job). */
export type JobSpec = FollowUpJobSpec;

/**
 * Enqueues a job through the application's own connection, so the job exists if and only if
 * the application's transaction commits (the transactional outbox on the queue side).
 *
 * Two forms:
 * - `addJob(db, task, payload, spec?)` with the task object: the payload is type-checked
 *   against the task's schema at compile time and validated at once (a bad payload throws
 *   here, not in the worker); the task must have been defined with an `identifier`.
 * - `addJob(db, identifier, payload, spec?)` by name: the payload is checked only when the
 *   job runs (a bad one is dead-lettered).
 *
 * `db` is a `pg` client or pool, a slonik connection or transaction, or anything with
 * `query(text, values)`. Needs the schema of `migrate()`.
 */
export async function addJob<Task extends AnyTask>(
  db: Queryable | CommonQueryMethods,
  task: Task,
  payload: PayloadOf<Task>,
  spec?: JobSpec,
): Promise<void>;
export async function addJob(db: Queryable | CommonQueryMethods, identifier: string, payload?: unknown, spec?: JobSpec): Promise<void>;
export async function addJob(db: Queryable | CommonQueryMethods, taskOrIdentifier: string | AnyTask, payload?: unknown, spec: JobSpec = {}): Promise<void> {
  let identifier: string;
  if (typeof taskOrIdentifier === "string") {
    identifier = taskOrIdentifier;
  } else {
    if (typeof taskOrIdentifier.identifier !== "string") {
      throw new TypeError("addJob: this task has no identifier; give defineTask an identifier, or pass the task's name instead");
    }
    identifier = taskOrIdentifier.identifier;
    const parsed = taskOrIdentifier.payload.safeParse(payload);
    if (!parsed.success) throw new TypeError(`addJob ${identifier}: ${describeError(parsed.error)}`);
  }
  const values = [
    identifier,
    JSON.stringify(payload ?? {}),
    spec.queueName ?? null,
    spec.runAt ? spec.runAt.toISOString() : null,
    spec.maxAttempts ?? null,
    spec.jobKey ?? null,
    spec.priority ?? null,
  ];
  await runStatement(db, ADD_JOB_STATEMENT, values, "addJob");
}
