import type { Job, JobHelpers, Task } from "graphile-worker";
import pTimeout from "p-timeout";
import { setTimeout as sleep } from "node:timers/promises";
import { sql, type DatabasePool } from "slonik";
import type { Admission, FlowControl } from "../flow/flowControl.ts";
import type { ServiceGate } from "../flow/serviceGate.ts";
import type { Logger } from "../log.ts";
import type { AnyTask, BatchItem } from "./defineTask.ts";
import { classifyError, describeError, FlowControlError, JobDeferredError, TaskTimeoutError } from "./errors.ts";
import { runtimeEvents } from "./events.ts";
import type { BatchApply, GroupCommitter } from "./groupCommit.ts";
import { holdsJobLock, parkJob } from "./graphileJobs.ts";
import { resultText } from "./jobResult.ts";
import { addJob, claimLedger, insertDeadLetter, isRecorded, recordFailure, recordHistory } from "./queries.ts";

export interface ExecutorOptions {
  pool: DatabasePool;
  log: Logger;
  /** Default deadline of prepare, ms (a task's own timeoutMs wins). */
  taskTimeoutMs: number;
  /** statement_timeout inside the apply transaction, ms. */
  applyTimeoutMs: number;
  services: object;
  /** Commits apply phases, grouped with those of other jobs finishing at the same time. */
  committer: GroupCommitter;
  /** Fleet-wide concurrency limits; a task without one never reaches it. Default: none. */
  flow?: FlowControl | null;
  /** Flow control of external calls (prepare's callService); none: calls go straight through. */
  serviceGate?: ServiceGate;
}

/**
 * The lock on this job passed to another execution (this worker was declared dead while the
 * job ran). Thrown so that graphile-worker's failJob, which checks the lock holder, changes
 * nothing, where a normal return would delete the job from under its new owner.
 */
export class JobTakenOverError extends Error {
  override name = "JobTakenOverError";
}

/**
 * Handed to graphile-worker after the job was parked (see JobDeferredError): the job is no
 * longer locked by this worker, so graphile-worker's failJob, which checks the lock holder,
 * changes nothing, where a normal return would delete the parked job.
 */
export class JobParkedError extends Error {
  override name = "JobParkedError";
}

/**
 * Turns a task definition into a graphile-worker task that commits its effects exactly once:
 * validate the payload, prepare (no transaction, deadline, AbortSignal), then one transaction
 * holding the job lock, the applied-record and the task's writes (shared with other jobs by
 * group commit; with applyBatch, written by one call for all of the batch's jobs of the task).
 * Failures are classified: transient ones are rethrown for graphile-worker to retry, permanent
 * or final ones are dead-lettered and the job then completes, leaving the queue.
 */
export function toGraphileTask(identifier: string, task: AnyTask, options: ExecutorOptions): Task {
  const { pool } = options;
  const taskLog = options.log.child({ task: identifier });
  // One function per task, so the committer gathers this task's jobs of a batch into one call.
  const applyBatch: BatchApply<BatchItem<unknown, unknown>> | undefined = task.applyBatch
    ? (tx, items) =>
        task.applyBatch!({
          items,
          tx,
          log: taskLog,
          services: options.services,
          addJob: (id, jobPayload, spec) => addJob(tx, id, jobPayload, spec),
        })
    : undefined;
  // Decided once per task: a task without a fleet-wide limit runs as if flow control did not exist.
  const flow = options.flow?.limits(identifier) ? options.flow : null;
  return async (rawPayload, helpers) => {
    const { job } = helpers;
    const event = { task: identifier, jobId: job.id, attempt: job.attempts };
    const log = options.log.child({ task: identifier, jobId: job.id, attempt: job.attempts });
    const started = performance.now();
    runtimeEvents.emit("job:started", event);

    // Only worth a query when prepare has I/O to spare; the batch's ledger claim catches the rest.
    // A first attempt cannot have been applied: every run starts with a fetch that counts an
    // attempt, so a revision that committed once comes back with attempts of 2 or more. This
    // keeps the query (and a pooled connection) off the path of nearly every job.
    if (task.prepare && job.attempts > 1 && (await isRecorded(pool, job))) {
      // No effects to share a transaction with: the history row is a statement of its own.
      await recordHistory(pool, [{ job, outcome: "skipped" }]);
      runtimeEvents.emit("job:skipped", event);
      log.info("job already applied; completing without new effects");
      return;
    }
    let admission: Admission | null = null;
    try {
      // Throws JobParkedError when a limit is full: the job is parked until a slot is freed.
      if (flow) {
        admission = await flow.admit(job).catch((error: unknown) => {
          if (error instanceof JobParkedError || error instanceof JobTakenOverError) throw error;
          // Flow control's own trouble (a lost connection, a conflict) is never the job's fault.
          throw new FlowControlError(`fleet-wide limit admission failed: ${describeError(error)}`, { cause: error });
        });
      }
      const payload = task.payload.parse(rawPayload);
      const prepared = task.prepare
        ? await runPrepare(task, { payload, helpers, log, options })
        : undefined;
      const outcome = applyBatch
        ? await options.committer.submitItem(job, applyBatch, { payload, job, prepared })
        : await options.committer.submit(job, async (tx) =>
            resultText(
              await task.apply!({
                payload,
                job,
                prepared,
                tx,
                log,
                services: options.services,
                addJob: (id, jobPayload, spec) => addJob(tx, id, jobPayload, spec),
              }),
            ),
          );
      if (outcome === "taken-over") throw new JobTakenOverError(`job ${job.id} was released and taken over; not committing`);
      if (outcome === "skipped") {
        runtimeEvents.emit("job:skipped", event);
        return;
      }
      const durationMs = Math.round(performance.now() - started);
      runtimeEvents.emit("job:applied", { ...event, durationMs });
      log.info({ durationMs }, "job applied");
    } catch (error) {
      if (error instanceof JobParkedError) throw error;
      if (error instanceof JobTakenOverError) {
        log.warn(error.message);
        throw error;
      }
      if (error instanceof JobDeferredError) {
        // Slots first: once parked the job may be fetched again, and its next run must find them free.
        await admission?.release();
        await park(error, job, pool, log, event);
      }
      await handleFailure(error, rawPayload, helpers, identifier, options, log, started);
    } finally {
      // However the job ended (applied, failed, dead-lettered, deferred), its slots are freed.
      await admission?.release();
    }
  };
}

/** Parks a deferred job until its runAt, attempt not counted; always throws (see JobParkedError). */
async function park(
  deferral: JobDeferredError,
  job: Job,
  pool: DatabasePool,
  log: Logger,
  event: { task: string; jobId: string; attempt: number },
): Promise<never> {
  if (!(await parkJob(pool, job, deferral.runAt))) {
    throw new JobTakenOverError(`job ${job.id} was released and taken over; not parking`);
  }
  runtimeEvents.emit("job:deferred", { ...event, runAt: deferral.runAt, reason: deferral.message });
  log.debug({ runAt: deferral.runAt.toISOString(), reason: deferral.message }, "job deferred; attempt not counted");
  throw new JobParkedError(`job ${job.id} deferred until ${deferral.runAt.toISOString()}: ${deferral.message}`);
}

async function runPrepare(
  task: AnyTask,
  run: { payload: unknown; helpers: JobHelpers; log: Logger; options: ExecutorOptions },
): Promise<unknown> {
  const timeoutMs = task.timeoutMs ?? run.options.taskTimeoutMs;
  const controller = new AbortController();
  const unlink = abortOnShutdown(run.helpers.abortSignal, controller);
  // Taken before pTimeout starts its timer: a call made by prepare ends, and records its
  // outcome, no later than prepare's deadline (see ServiceGate.call).
  const deadlineAt = performance.now() + timeoutMs;
  const { job } = run.helpers;
  const scope = { signal: controller.signal, deadlineAt, timeoutMs, job: { id: job.id, lockedBy: job.locked_by! } };
  try {
    return await pTimeout(
      task.prepare!({
        payload: run.payload,
        job: run.helpers.job,
        signal: controller.signal,
        db: run.options.pool,
        services: run.options.services,
        log: run.log,
        callService: (name, fn, callOptions) =>
          run.options.serviceGate ? run.options.serviceGate.call(name, fn, callOptions ?? {}, scope) : fn(controller.signal),
      }),
      {
        milliseconds: timeoutMs,
        // Rejects at once on shutdown too, even if prepare ignores the signal.
        signal: controller.signal,
        message: new TaskTimeoutError(`prepare exceeded its ${timeoutMs} ms deadline`),
      },
    );
  } catch (error) {
    // Whatever ended prepare early, the I/O it started must stop with it.
    controller.abort(error);
    throw error;
  } finally {
    unlink();
  }
}

/** Per shutdown signal, the controllers of the jobs running under it. */
const runningUnder = new WeakMap<AbortSignal, Set<AbortController>>();

/**
 * Aborts `controller` when the worker's shutdown signal fires, until the returned function is
 * called. All of a worker's jobs share that signal, so a listener per running job would put as
 * many listeners on it as there are job slots (Node warns past 10), and AbortSignal.any keeps a
 * reference per call on a long-lived source (Node 20). So each shutdown signal gets one listener,
 * which aborts the controllers of the jobs running at that moment.
 */
function abortOnShutdown(shutdown: AbortSignal, controller: AbortController): () => void {
  if (shutdown.aborted) {
    controller.abort(shutdown.reason);
    return () => {};
  }
  let running = runningUnder.get(shutdown);
  if (!running) {
    const controllers = new Set<AbortController>();
    shutdown.addEventListener("abort", () => controllers.forEach((each) => each.abort(shutdown.reason)), { once: true });
    runningUnder.set(shutdown, controllers);
    running = controllers;
  }
  running.add(controller);
  return () => running.delete(controller);
}

async function handleFailure(
  error: unknown,
  rawPayload: unknown,
  helpers: JobHelpers,
  identifier: string,
  options: ExecutorOptions,
  log: Logger,
  started: number,
): Promise<void> {
  const { job } = helpers;
  const message = describeError(error);
  const durationMs = Math.round(performance.now() - started);
  const event = { task: identifier, jobId: job.id, attempt: job.attempts, error: message, durationMs };
  if (helpers.abortSignal.aborted) {
    // Not the job's fault: graphile-worker releases it for another worker. (On a final
    // attempt graphile-worker counts it as exhausted and the sweeper dead-letters it.)
    runtimeEvents.emit("job:retry", event);
    log.info({ error: message, durationMs }, "job aborted by shutdown; released to run again");
    throw error;
  }
  const kind = classifyError(error);

  if (kind === "transient" && job.attempts < job.max_attempts) {
    await untilDatabaseAnswers(options.pool, helpers.abortSignal);
    await recordFailure(options.pool, job, message).catch((recordError) =>
      log.warn({ error: describeError(recordError) }, "could not record the failure"),
    );
    runtimeEvents.emit("job:retry", event);
    log.warn({ error: message, maxAttempts: job.max_attempts, durationMs }, "attempt failed; will retry");
    throw error;
  }

  const reason = kind === "permanent" ? "permanent" : "exhausted";
  const queueName = await helpers.getQueueName();
  const outcome = await options.pool.transaction(async (tx) => {
    if (!(await holdsJobLock(tx, job))) return "taken-over" as const;
    if (!(await claimLedger(tx, job, "dead"))) return "recorded" as const;
    await insertDeadLetter(tx, job, queueName, rawPayload, reason, message);
    await recordHistory(tx, [{ job, outcome: "dead", error: message }]);
    return "dead" as const;
  });
  if (outcome === "taken-over") throw new JobTakenOverError(`job ${job.id} was released and taken over; not dead-lettering`);
  if (outcome === "dead") {
    runtimeEvents.emit("job:dead", { ...event, reason });
    log.error({ error: message, reason, durationMs }, "job dead-lettered");
  }
  // Returning lets graphile-worker complete the job: it now lives on in dead_letters only.
}

/** How long a failed job waits for a lost database before handing its failure back anyway. */
const DATABASE_WAIT_MS = 30_000;

/**
 * graphile-worker records a failure (failJob) without awaiting it and without retrying a lost
 * connection, so a failure handed back while Postgres restarts becomes an unhandled rejection
 * that ends the process. So before handing a transient failure back, make sure the database
 * answers: normally one quick query; while Postgres restarts, a wait (until it is back, the
 * worker stops, or DATABASE_WAIT_MS passes).
 */
async function untilDatabaseAnswers(pool: DatabasePool, shutdown: AbortSignal): Promise<void> {
  const deadline = Date.now() + DATABASE_WAIT_MS;
  // The waits listen on a controller of this job's own (see abortOnShutdown).
  const controller = new AbortController();
  const unlink = abortOnShutdown(shutdown, controller);
  try {
    for (let delayMs = 100; !controller.signal.aborted; delayMs = Math.min(delayMs * 2, 2_000)) {
      try {
        await pool.query(sql.unsafe`select 1`);
        return;
      } catch {
        if (Date.now() + delayMs > deadline) return;
        await sleep(delayMs, undefined, { signal: controller.signal }).catch(() => {});
      }
    }
  } finally {
    unlink();
  }
}
