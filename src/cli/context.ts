import { statSync } from "node:fs";
import type pg from "pg";
import type { DatabasePool } from "slonik";
import type { Config } from "../config.ts";
import { sessionUrlOf } from "../db/connections.ts";
import { openDatabase, type Database } from "../db/database.ts";
import { checkMigrations, SchemaError, type AppMigrations } from "../db/migrate.ts";
import { createAppPool, createQueuePool } from "../db/pools.ts";
import type { Logger } from "../log.ts";
import { redactCredentials } from "../redact.ts";
import { describeError } from "../runtime/errors.ts";
import { createQdrantClient, type QdrantClient } from "../outbox/qdrant.ts";
import { createGrpcPointWrites } from "../outbox/qdrantGrpc.ts";
import { Relay } from "../outbox/relay.ts";
import type { Sync } from "../outbox/sync.ts";
import type { CommandContext as PublicCommandContext } from "../api/defineConfig.ts";
import type { LoadedConfig } from "./appConfig.ts";

/** What a command works with: the database, both pools and the Qdrant client. */
export interface CommandContext {
  config: Config;
  log: Logger;
  database: Database;
  queuePool: pg.Pool;
  appPool: DatabasePool;
  /** Made on first use: most commands never talk to Qdrant. */
  qdrant(): Promise<QdrantClient>;
  close(): Promise<void>;
}

export interface ContextOptions {
  /**
   * The command applies the migrations itself (worker, relay, migrate). Every other command
   * first checks that the database's schema is this version's, so that an unmigrated (or
   * older) database is one line saying to run `pgconverge migrate`, never "relation … does
   * not exist" from whichever query comes first.
   */
  migrates?: boolean;
}

/**
 * The commands that migrate (worker, relay, migrate) are also the ones that hold pools and LISTEN
 * sessions for long: only they probe whether DATABASE_URL and DATABASE_DIRECT_URL keep sessions
 * as DATABASE_POOL_MODE says (a few connections and round trips). A short command in front of a
 * misdeclared pooler fails on its own: PgBouncer refuses the startup parameters of its pool.
 */
const probesPoolMode = (options: ContextOptions) => options.migrates === true;

const qdrantClientOfConfig = (config: Config) => createQdrantClient({ url: config.QDRANT_URL, apiKey: config.QDRANT_API_KEY, timeoutMs: config.QDRANT_TIMEOUT_MS });

export async function openContext(config: Config, log: Logger, concurrency: number, options: ContextOptions = {}): Promise<CommandContext> {
  const database = await openDatabase(config, log, { checkPoolMode: probesPoolMode(options) });
  const queuePool = createQueuePool(database.url, concurrency);
  let appPool: DatabasePool;
  try {
    if (!options.migrates) {
      const schema = await checkMigrations(queuePool, { app: appMigrations(config) });
      if (!schema.ok) throw new SchemaError(`this database is not ready for this version of pgconverge: ${schema.reason}`);
    }
    appPool = await createAppPool(database.url, concurrency, { statementTimeoutMs: config.APPLY_TIMEOUT_MS, poolMode: database.poolMode });
  } catch (error) {
    await queuePool.end();
    await database.close();
    throw error;
  }
  let qdrant: Promise<QdrantClient> | undefined;
  const plainHttp = [config.QDRANT_URL, config.QDRANT_GRPC_URL].filter((url) => url !== undefined && /^http:/i.test(url));
  if (config.QDRANT_API_KEY && plainHttp.length > 0) {
    log.warn({ qdrantUrls: plainHttp.map((url) => redactCredentials(url!)) }, "QDRANT_API_KEY is sent over plain http; use https:// Qdrant URLs outside a trusted network");
  }
  return {
    config,
    log,
    database,
    queuePool,
    appPool,
    qdrant: () => (qdrant ??= qdrantClientOfConfig(config)),
    async close() {
      await appPool.end();
      await queuePool.end();
      await database.close();
    },
  };
}

/** Runs `fn` with a context and closes it on every path. */
export async function withContext<T>(
  config: Config,
  log: Logger,
  concurrency: number,
  fn: (context: CommandContext) => Promise<T>,
  options: ContextOptions = {},
): Promise<T> {
  const context = await openContext(config, log, concurrency, options);
  try {
    return await fn(context);
  } finally {
    await context.close();
  }
}

/** Where the reference pipeline keeps its migrations, relative to the working directory. */
const PIPELINE_MIGRATIONS: AppMigrations = { name: "pipeline", directory: "pipeline/sql" };

/**
 * The application's migrations the CLI applies (migrate, worker, relay) and expects (every
 * other command, /readyz): PGCONVERGE_APP_MIGRATIONS (DIR, a set named "app", or NAME=DIR), or
 * else the reference pipeline's pipeline/sql when the working directory has it.
 */
export function appMigrations(config: Config): AppMigrations | undefined {
  const setting = config.PGCONVERGE_APP_MIGRATIONS;
  if (setting !== undefined) {
    const equals = setting.indexOf("=");
    return equals === -1 ? { name: "app", directory: setting } : { name: setting.slice(0, equals), directory: setting.slice(equals + 1) };
  }
  return statSync(PIPELINE_MIGRATIONS.directory, { throwIfNoEntry: false })?.isDirectory() ? PIPELINE_MIGRATIONS : undefined;
}

export async function createRelay(context: CommandContext, syncs: readonly Sync[]): Promise<Relay> {
  const { config } = context;
  return new Relay({
    pool: context.appPool,
    listenUrl: sessionUrlOf(context.database),
    qdrant: await context.qdrant(),
    ...(config.QDRANT_GRPC_URL ? { points: await createGrpcPointWrites(config.QDRANT_GRPC_URL, { apiKey: config.QDRANT_API_KEY, timeoutMs: config.QDRANT_TIMEOUT_MS }) } : {}),
    syncs,
    log: context.log.child({ component: "relay" }),
    batchSize: config.RELAY_BATCH_SIZE,
    pollIntervalMs: config.RELAY_POLL_INTERVAL_MS,
    leaseMs: config.RELAY_LEASE_MS,
    maxBackoffMs: config.RELAY_MAX_BACKOFF_MS,
    writeOrdering: config.QDRANT_WRITE_ORDERING,
  });
}

/** The context of a config file's command: the database opened on first use, closed by close(). */
export async function openCommandContext(config: Config, log: Logger, app: LoadedConfig): Promise<PublicCommandContext & { close(): Promise<void> }> {
  let opened: Promise<CommandContext> | null = null;
  return {
    env: process.env,
    log,
    qdrant: await qdrantClientOfConfig(config),
    get syncs() {
      return app.syncs();
    },
    async db() {
      opened ??= openContext(config, log, 1);
      return (await opened).appPool;
    },
    async close() {
      if (opened) await (await opened.catch(() => null))?.close();
    },
  };
}

/**
 * Resolves with the exit code once SIGTERM/SIGINT has stopped the services (0), or once
 * `failed` rejects (1, or the error's own `exitCode`). A second signal exits at once.
 */
export function untilSignal(log: Logger, stop: () => Promise<void>, failed: Promise<unknown> = new Promise(() => {})): Promise<number> {
  return new Promise<number>((resolve) => {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        log.warn({ signal }, "second signal; exiting now (in-flight jobs are released by the sweeper)");
        process.exit(1);
      }
      signalled = true;
      log.info({ signal }, "shutting down: no new work; waiting for in-flight work");
      void stop().then(() => resolve(0));
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    // graphile-worker records job outcomes without awaiting them, so a database lost at that
    // moment for longer than their retries (db/outcomeRetry.ts) surfaces here. Stop in order (deregistering releases whatever this process still
    // has locked) and exit 1 for the supervisor, with one log line instead of a stack trace.
    process.on("unhandledRejection", (reason: unknown) => {
      log.error({ error: describeError(reason) }, "unexpected failure outside any job; stopping");
      void stop().then(() => resolve(1));
    });
    failed.catch((error: unknown) => {
      log.error({ error: error instanceof Error ? error.message : String(error) }, "stopped by a failure");
      // A failure may name its own exit code (a breaking migration's is 57: restart on the new code).
      const code = (error as { exitCode?: unknown } | null)?.exitCode;
      void stop().then(() => resolve(typeof code === "number" ? code : 1));
    });
  });
}
