import type { DatabasePool } from "slonik";
import type { Logger } from "../log.ts";
import type { QdrantClient } from "../outbox/qdrant.ts";
import type { Sync, SyncDefinition } from "../outbox/sync.ts";
import type { TaskRecord } from "./runWorker.ts";
import type { ServiceFlowOptions } from "../flow/serviceSettings.ts";

/** What a command of the config file gets from the CLI. */
export interface CommandContext {
  /** The process environment, for the application's own settings. */
  env: NodeJS.ProcessEnv;
  /** The CLI's pino logger (stderr, LOG_LEVEL), so stdout stays the command's output. */
  log: Logger;
  /**
   * The database as a slonik pool, opened on first call (DATABASE_URL, or the embedded
   * Postgres without it) and closed by the CLI after `run`. Not opened for a command that
   * never asks, so a usage error needs no database.
   */
  db(): Promise<DatabasePool>;
  /** A Qdrant client for QDRANT_URL / QDRANT_API_KEY, with QDRANT_TIMEOUT_MS on every request. */
  qdrant: QdrantClient;
  /** The config file's syncs, checked. */
  syncs: readonly Sync[];
}

/** What a config file's services function is given. */
export interface ServicesContext {
  env: NodeJS.ProcessEnv;
  log: Logger;
  /** The identifiers of the tasks this worker runs. */
  tasks: readonly string[];
}

/** A command the application adds to the CLI (`pgconverge NAME args...`). */
export interface CommandDefinition {
  /** One or two lines for `pgconverge --help`, starting with the command and its arguments. */
  usage: string;
  /**
   * Runs the command with its arguments (everything after its name, flags included: parse them
   * with node:util's parseArgs, whose errors are usage errors) and resolves with the exit code.
   * Throw UsageError or ConfigError for exit 2 with one line; any other error is exit 1.
   */
  run(args: string[], context: CommandContext): Promise<number>;
}

/**
 * The application's configuration for the `pgconverge` CLI, the default export of
 * `pgconverge.config.{js,mjs,ts}` in the working directory (or `--config FILE`, or
 * PGCONVERGE_CONFIG). Every field is optional; without a config file the CLI runs the core
 * alone: task files from `--tasks` / PGCONVERGE_TASKS_DIR, no syncs, no extra commands.
 */
export interface AppConfig {
  /**
   * The worker's tasks: a directory of task files (relative to the config file) or a record
   * of defineTask tasks by identifier. Default: `--tasks` / PGCONVERGE_TASKS_DIR ("tasks").
   * `pgconverge worker --tasks DIR` overrides it.
   */
  tasks?: string | TaskRecord;
  /**
   * The services the worker hands to its tasks, or a function that makes them (called once,
   * by `worker` only, so other commands do not connect to the services; it may check them and
   * throw ConfigError). It is told the identifiers of the tasks the worker runs, so it can skip
   * a client no task needs. Default none.
   */
  services?: object | ((context: ServicesContext) => object | Promise<object>);
  /**
   * The syncs `worker` and `relay` relay and `reconcile` compares, or a function of the
   * environment that declares them (e.g. a collection named by a variable). Default none.
   */
  syncs?: readonly SyncDefinition[] | ((env: NodeJS.ProcessEnv) => readonly SyncDefinition[]);
  /** Commands the application adds, by name; a name of a core command is refused. Default none. */
  commands?: Record<string, CommandDefinition>;
  /**
   * The worker's rate limits of external services, as runWorker's `flow` (e.g.
   * `{ services: { ollama: { rate: 20 } } }`); a rate in FLOW_SERVICE_RATES wins, and the
   * breaker's settings come from BREAKER_FAILURE_THRESHOLD and BREAKER_OPEN_MS. Default none.
   */
  flow?: ServiceFlowOptions;
}

/**
 * Returns the config unchanged: it exists for the types (and the CLI checks the shape when it
 * loads the file, with one line naming the field for a mistake).
 *
 * ```ts
 * // pgconverge.config.ts
 * import { defineConfig } from "pgconverge";
 * export default defineConfig({ tasks: "tasks", syncs: [productSync], services: () => ({ mail: createMailer() }) });
 * ```
 */
export function defineConfig(config: AppConfig): AppConfig {
  return config;
}
