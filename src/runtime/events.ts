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
  /** A group-commit transaction committed: `size` jobs, `applied` with effects, `failed` rolled back to their savepoint. */
  "batch:committed": [{ size: number; applied: number; failed: number }];
  /** The job was written to dead_letters. */
  "job:dead": [JobEvent & { reason: "permanent" | "exhausted"; error: string; durationMs: number }];
}

/**
 * Process-wide signals of the task runtime: metrics and logs subscribe to them, and tests
 * await them instead of sleeping.
 */
export const runtimeEvents = new EventEmitter<RuntimeEventMap>();
runtimeEvents.setMaxListeners(100);
