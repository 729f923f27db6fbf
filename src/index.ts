/**
 * pgconverge's public API: everything exported here is covered by semantic versioning (see
 * CHANGELOG.md). Modules reached any other way are internal and may change in any release.
 */

// Tasks: what a job does, in two phases (prepare: I/O with no transaction; apply: one transaction).
export { defineTask } from "./runtime/defineTask.ts";
export type {
  ApplyBatchContext,
  ApplyContext,
  BatchItem,
  DefinedTask,
  NoServices,
  PayloadOf,
  PrepareContext,
  ServicesOf,
  TaskDefinition,
} from "./runtime/defineTask.ts";
export { PermanentError } from "./runtime/errors.ts";

// Enqueue from the application's own transaction.
export { addJob } from "./api/addJob.ts";
export type { JobSpec, Queryable } from "./api/addJob.ts";

// Run a worker from the application's code.
export { runWorker } from "./api/runWorker.ts";
export type { RunningWorker, RunWorkerOptions, ServicesFor, TaskRecord, WorkerSettings } from "./api/runWorker.ts";

// Schema.
export { migrate } from "./api/migrate.ts";
export type { MigrateOptions } from "./api/migrate.ts";
export type { AppMigrations } from "./db/migrate.ts";

// Outbox syncs (a table mirrored into a Qdrant collection) and the reconciler join the public
// API here once their declarations land.
