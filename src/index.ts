/**
 * pgconverge's public API: everything exported here is covered by semantic versioning (see
 * CHANGELOG.md). Modules reached any other way are internal and may change in any release.
 */

// Tasks: what a job does, in two phases (prepare: I/O with no transaction; apply: one transaction).
export { defineTask, JOB_RESULT_MAX_BYTES } from "./runtime/defineTask.ts";
export type {
  ApplyBatchContext,
  ApplyContext,
  BatchItem,
  DefinedTask,
  JobResult,
  NoServices,
  PayloadOf,
  PrepareContext,
  ServicesOf,
  TaskDefinition,
} from "./runtime/defineTask.ts";
export { JobDeferredError, PermanentError } from "./runtime/errors.ts";
export type { CallServiceOptions, ServiceLimit } from "./flow/serviceGate.ts";
export type { ServiceFlowOptions } from "./flow/serviceSettings.ts";

// Enqueue from the application's own transaction.
export { addJob, addJobs } from "./api/addJob.ts";
export type { JobKeyMode, JobSpec, JobToAdd, Queryable } from "./api/addJob.ts";

// Run a worker from the application's code.
export { runWorker } from "./api/runWorker.ts";
export type { RunningWorker, RunWorkerOptions, ServicesFor, TaskRecord, WorkerSettings } from "./api/runWorker.ts";
// Fleet-wide concurrency limits: defineTask's `flow` and runWorker's `flow`.
export type { TaskFlowOptions, WorkerFlowOptions } from "./flow/options.ts";

// Schema.
export { migrate } from "./api/migrate.ts";
export type { MigrateOptions } from "./api/migrate.ts";
export type { AppMigrations } from "./db/migrate.ts";

// Outbox syncs: a table (or query) of the application mirrored into a Qdrant collection. Declare
// it, write its changes in your transaction, relay it from a worker (runWorker's `syncs`), and
// compare and repair with the reconciler.
export { defineSync } from "./outbox/sync.ts";
export type { Distance, PointId, PointState, Sync, SyncDefinition } from "./outbox/sync.ts";
export { enqueueSync, reconcile } from "./api/syncs.ts";
export type { DriftReport, QdrantOptions, ReconcileOptions, RelayOptions } from "./api/syncs.ts";

// The web dashboard, to mount in the application's own HTTP server (`pgconverge dashboard` serves it alone).
export { createDashboard } from "./api/dashboard.ts";
export type { Dashboard, DashboardCredentials, DashboardOptions } from "./api/dashboard.ts";

// The CLI's config file (pgconverge.config.ts): the application's tasks, services, syncs and commands.
export { defineConfig } from "./api/defineConfig.ts";
export type { AppConfig, CommandContext, CommandDefinition, ServicesContext } from "./api/defineConfig.ts";
// Errors the CLI reports as one line with exit code 2 (bad usage, bad configuration); any other is exit 1.
export { ConfigError } from "./configFields.ts";
export { UsageError } from "./cli/usage.ts";
// runWorker's done rejects with it (exitCode 57, graphile-worker's) after a breaking migration of graphile-worker's schema.
export { BreakingMigrationError } from "./worker.ts";
// One-line text of any error, credentials in URLs redacted; and a URL's credentials split off for fetch.
export { describeError } from "./runtime/errors.ts";
export { splitCredentials } from "./redact.ts";
