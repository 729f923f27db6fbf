import type { CommonQueryMethods } from "slonik";
import type { AnyTask, FollowUpJobSpec, PayloadOf } from "../runtime/defineTask.ts";
import { describeError } from "../runtime/errors.ts";
import { ADD_JOB_STATEMENT, ADD_JOBS_STATEMENT } from "../runtime/graphileJobs.ts";
import { checkJobSpec } from "../runtime/jobSpec.ts";
import { runStatement, type Queryable } from "../db/queryable.ts";

export type { Queryable };
export type { JobKeyMode } from "../runtime/defineTask.ts";

/** Options of an enqueued job (graphile-worker's add_job): see each field. */
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
 * `query(text, values)`. Needs the schema of `migrate()`. A bad `spec` (a jobKeyMode without a
 * jobKey, an invalid Date, a priority out of range) throws a one-line TypeError.
 */
export async function addJob<Task extends AnyTask>(
  db: Queryable | CommonQueryMethods,
  task: Task,
  payload: PayloadOf<Task>,
  spec?: JobSpec,
): Promise<void>;
export async function addJob(db: Queryable | CommonQueryMethods, identifier: string, payload?: unknown, spec?: JobSpec): Promise<void>;
export async function addJob(db: Queryable | CommonQueryMethods, taskOrIdentifier: string | AnyTask, payload?: unknown, spec: JobSpec = {}): Promise<void> {
  const identifier = identifierOf(taskOrIdentifier, "addJob");
  checkPayload(taskOrIdentifier, identifier, payload);
  checkJobSpec(spec, `addJob ${identifier}`);
  const values = [
    identifier,
    JSON.stringify(payload ?? {}),
    spec.queueName ?? null,
    spec.runAt ? spec.runAt.toISOString() : null,
    spec.maxAttempts ?? null,
    spec.jobKey ?? null,
    spec.priority ?? null,
    spec.jobKeyMode ?? null,
  ];
  await runStatement(db, ADD_JOB_STATEMENT, values, "addJob");
}

/** One job of addJobs: its payload and options. */
export interface JobToAdd<Payload = unknown> {
  payload: Payload;
  spec?: JobSpec;
}

/**
 * Enqueues many jobs of one task in one statement, with the same result as calling addJob for
 * each in order (payload checks, job keys and spec options alike), in a fraction of the round
 * trips: for bulk imports. Like addJob, they exist if and only if the caller's transaction
 * commits. Nothing is written when `jobs` is empty; one bad payload or spec throws before any is.
 */
export async function addJobs<Task extends AnyTask>(
  db: Queryable | CommonQueryMethods,
  task: Task,
  jobs: ReadonlyArray<JobToAdd<PayloadOf<Task>>>,
): Promise<void>;
export async function addJobs(db: Queryable | CommonQueryMethods, identifier: string, jobs: readonly JobToAdd[]): Promise<void>;
export async function addJobs(db: Queryable | CommonQueryMethods, taskOrIdentifier: string | AnyTask, jobs: readonly JobToAdd[]): Promise<void> {
  const identifier = identifierOf(taskOrIdentifier, "addJobs");
  if (!Array.isArray(jobs)) throw new TypeError(`addJobs ${identifier}: jobs must be an array of { payload, spec? }`);
  for (const [index, job] of jobs.entries()) {
    checkPayload(taskOrIdentifier, `${identifier} (job ${index})`, job.payload, "addJobs");
    checkJobSpec(job.spec ?? {}, `addJobs ${identifier} (job ${index})`);
  }
  if (jobs.length === 0) return;
  const column = <T>(pick: (spec: JobSpec) => T | undefined) => jobs.map((job) => pick(job.spec ?? {}) ?? null);
  const values = [
    jobs.map((job) => JSON.stringify(job.payload ?? {})),
    column((spec) => spec.queueName),
    column((spec) => spec.runAt?.toISOString()),
    column((spec) => spec.maxAttempts),
    column((spec) => spec.jobKey),
    column((spec) => spec.priority),
    jobs.map((job) => job.spec?.jobKeyMode === "preserve_run_at"),
    segments(jobs),
    identifier,
  ];
  await runStatement(db, ADD_JOBS_STATEMENT, values, "addJobs");
}

/**
 * Cuts the jobs into runs that one add_jobs call can take as if each were added on its own: a
 * run ends where the job key mode changes or a job key comes again (add_jobs would refuse to
 * touch one job twice; the later job must replace the earlier, as with two add_job calls).
 */
function segments(jobs: readonly JobToAdd[]): number[] {
  let segment = 0;
  let preserve: boolean | null = null;
  let keys = new Set<string>();
  return jobs.map((job) => {
    const jobPreserve = job.spec?.jobKeyMode === "preserve_run_at";
    const key = job.spec?.jobKey;
    if ((preserve !== null && jobPreserve !== preserve) || (key !== undefined && keys.has(key))) {
      segment++;
      keys = new Set();
    }
    preserve = jobPreserve;
    if (key !== undefined) keys.add(key);
    return segment;
  });
}

function identifierOf(taskOrIdentifier: string | AnyTask, caller: string): string {
  if (typeof taskOrIdentifier === "string") return taskOrIdentifier;
  if (typeof taskOrIdentifier.identifier !== "string") {
    throw new TypeError(`${caller}: this task has no identifier; give defineTask an identifier, or pass the task's name instead`);
  }
  return taskOrIdentifier.identifier;
}

/** A task object's payload is validated at enqueue; by name, only when the job runs. */
function checkPayload(taskOrIdentifier: string | AnyTask, label: string, payload: unknown, caller = "addJob"): void {
  if (typeof taskOrIdentifier === "string") return;
  const parsed = taskOrIdentifier.payload.safeParse(payload);
  if (!parsed.success) throw new TypeError(`${caller} ${label}: ${describeError(parsed.error)}`);
}
