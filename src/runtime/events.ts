import { EventEmitter } from "node:events";

export interface JobEvent {
  task: string;
  jobId: string;
  attempt: number;
}

export interface RuntimeEventMap {
  /** An attempt began (every run of the task function, re-runs of applied jobs included). */
  "job:started": [JobEvent];
  /** The apply transaction committed (graphile-worker has not yet recorded completion). */
  "job:applied": [JobEvent & { durationMs: number }];
  /** The job was already recorded as applied or dead; this run changed nothing. */
  "job:skipped": [JobEvent];
  /** The attempt failed with a transient error; graphile-worker will retry it. */
  "job:retry": [JobEvent & { error: string; durationMs: number }];
  /** The job may not run yet (flow control); it was put back until runAt without counting the attempt. */
  "job:deferred": [JobEvent & { runAt: Date; reason: string }];
  /** A group-commit transaction committed `size` jobs' apply phases, `applied` of them with effects. */
  "batch:committed": [{ size: number; applied: number }];
  /** A group-commit transaction failed as a whole; its jobs are run again one transaction each. */
  "batch:split": [{ size: number; error: string }];
  /** The job was written to dead_letters. */
  "job:dead": [JobEvent & { reason: "permanent" | "exhausted"; error: string; durationMs: number }];
}

/**
 * Process-wide signals of the task runtime: metrics and logs subscribe to them, and tests
 * await them instead of sleeping.
 */
export const runtimeEvents = new EventEmitter<RuntimeEventMap>();
runtimeEvents.setMaxListeners(100);
