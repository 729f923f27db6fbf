import { sql, type CommonQueryMethods } from "slonik";
import type { AnyTask, FollowUpJobSpec, PayloadOf } from "../runtime/defineTask.ts";
import { describeError } from "../runtime/errors.ts";
import { ADD_JOB_STATEMENT } from "../runtime/graphileJobs.ts";

/**
 * A database handle that addJob can enqueue through: a `pg` Client or PoolClient inside the
 * application's transaction, a `pg` Pool (the job then commits on its own), or anything with
 * `query(text, values)` returning a promise. A slonik connection or transaction is accepted
 * as well (see addJob).
 */
export interface Queryable {
  query(text: string, values: unknown[]): Promise<unknown>;
}

/** Options of an enqueued job (graphile-worker's add_job). */
export type JobSpec = FollowUpJobSpec;

/** A slonik connection, pool or transaction: its query takes sql tokens, not text. */
function isSlonik(db: unknown): db is CommonQueryMethods {
  const candidate = db as Partial<CommonQueryMethods> | null;
  return typeof candidate?.anyFirst === "function" && typeof candidate.maybeOneFirst === "function";
}

/** The statement as a slonik query: its `$n` placeholders become template values. */
function slonikStatement(values: unknown[]) {
  const parts = ADD_JOB_STATEMENT.split(/\$\d+/);
  const args = [...ADD_JOB_STATEMENT.matchAll(/\$(\d+)/g)].map((match) => values[Number(match[1]) - 1]);
  // slonik takes only what looks like a template literal: a frozen `raw` beside the strings.
  const strings = Object.freeze(Object.assign([...parts], { raw: Object.freeze([...parts]) })) as unknown as TemplateStringsArray;
  return sql.unsafe(strings, ...(args as never[]));
}

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
  if (isSlonik(db)) await db.query(slonikStatement(values));
  else if (typeof (db as Queryable | null)?.query === "function") await (db as Queryable).query(ADD_JOB_STATEMENT, values);
  else throw new TypeError("addJob: db must be a pg client or pool, a slonik connection, or have query(text, values)");
}
