import type { CronItem } from "graphile-worker";
import { parseCronItems } from "graphile-worker";
import pg from "pg";
import type { CommonQueryMethods, DatabasePool } from "slonik";
import { z } from "zod";
import { ConfigError, CoreShape, type Config } from "../config.ts";
import { createAppPool } from "../db/pools.ts";
import type { Queryable } from "../db/queryable.ts";
import { createLogger, type Logger } from "../log.ts";
import { enqueuePointChanges, readOwner, recordReconcileRun } from "../outbox/outbox.ts";
import { createQdrantClient, restPointWrites, type PointWrites, type QdrantClient, type WriteOrdering } from "../outbox/qdrant.ts";
import { createGrpcPointWrites } from "../outbox/qdrantGrpc.ts";
import { reconcile as reconcileSync, type DriftReport } from "../outbox/reconciler.ts";
import { createReconcileTask, RECONCILE_TASK } from "../outbox/reconcileTask.ts";
import { Relay } from "../outbox/relay.ts";
import { checkSyncs, defineSync, type PointId, type Sync, type SyncDefinition } from "../outbox/sync.ts";

/** Where Qdrant is. */
export interface QdrantOptions {
  /** Qdrant's REST URL, e.g. `http://127.0.0.1:6333` (QDRANT_URL). */
  url: string;
  /**
   * Qdrant's gRPC URL, e.g. `http://127.0.0.1:6334` (QDRANT_GRPC_URL). When set, the relay writes
   * points over gRPC: vectors go as packed float32 instead of JSON, which costs both sides a
   * fraction of the CPU. Everything else stays on `url`. Default none (all REST).
   */
  grpcUrl?: string;
  /** Qdrant's API key (QDRANT_API_KEY). Default none. */
  apiKey?: string;
  /** Deadline of each Qdrant request, ms (QDRANT_TIMEOUT_MS). Default 10 s: a hung request is retried, not waited on forever. */
  timeoutMs?: number;
  /**
   * `ordering` of the relay's writes on a replicated collection (QDRANT_WRITE_ORDERING): "weak",
   * "medium" or "strong". Default "medium": replicas apply a point's writes in one order, so a
   * late upsert cannot re-create a point deleted after it. No effect on a single node.
   */
  writeOrdering?: "weak" | "medium" | "strong";
  /**
   * Read `consistency` of the reconciler (QDRANT_READ_CONSISTENCY): "majority", "quorum", "all" or
   * a number of replicas. Default "majority", so one lagging replica does not report drift.
   */
  readConsistency?: number | "majority" | "quorum" | "all";
}

/** The relay's settings (the RELAY_* variables of the CLI), with the same defaults and bounds. */
export interface RelayOptions {
  /** Outbox changes per Qdrant request (RELAY_BATCH_SIZE). Default 128. */
  batchSize?: number;
  /** Fallback poll, ms (RELAY_POLL_INTERVAL_MS). Default 5 s; commits wake the relay at once by LISTEN/NOTIFY. */
  pollIntervalMs?: number;
  /** How long a claimed change stays this relay's, ms (RELAY_LEASE_MS). Default 60 s; at least 2 x qdrant.timeoutMs, or a slow request could outlive its lease. */
  leaseMs?: number;
  /** Cap of the backoff after transient Qdrant failures, ms (RELAY_MAX_BACKOFF_MS). Default 60 s. */
  maxBackoffMs?: number;
}

const QdrantSchema = z.object({
  url: CoreShape.shape.QDRANT_URL.removeDefault(),
  grpcUrl: CoreShape.shape.QDRANT_GRPC_URL,
  apiKey: CoreShape.shape.QDRANT_API_KEY,
  timeoutMs: CoreShape.shape.QDRANT_TIMEOUT_MS,
  writeOrdering: CoreShape.shape.QDRANT_WRITE_ORDERING,
  readConsistency: CoreShape.shape.QDRANT_READ_CONSISTENCY,
});
type QdrantSettings = z.infer<typeof QdrantSchema>;
const RelaySchema = z.object({
  batchSize: CoreShape.shape.RELAY_BATCH_SIZE,
  pollIntervalMs: CoreShape.shape.RELAY_POLL_INTERVAL_MS,
  leaseMs: CoreShape.shape.RELAY_LEASE_MS,
  maxBackoffMs: CoreShape.shape.RELAY_MAX_BACKOFF_MS,
});

function parseOption<T extends z.ZodTypeAny>(name: string, schema: T, value: unknown): z.infer<T> {
  const parsed = schema.safeParse(value ?? {});
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const path = [name, ...issue.path].join(".");
  throw new ConfigError(`${path}: ${issue.message}`);
}

/** The Qdrant client of these options; a bad option is a ConfigError naming it. */
export async function qdrantClientOf(options: QdrantOptions | undefined, caller: string): Promise<{ client: QdrantClient } & QdrantSettings> {
  if (options === undefined) throw new ConfigError(`${caller}: syncs need qdrant: { url }`);
  const settings = parseOption("qdrant", QdrantSchema, options);
  return { client: await createQdrantClient(settings), ...settings };
}

/** How a relay of these settings writes points: over gRPC when `grpcUrl` is set, else with the REST client. */
export function pointWritesOf(qdrant: { client: QdrantClient } & QdrantSettings): Promise<PointWrites> | PointWrites {
  return qdrant.grpcUrl === undefined ? restPointWrites(qdrant.client) : createGrpcPointWrites(qdrant.grpcUrl, qdrant);
}

/** Checks the declarations (each through defineSync) and that no collection is declared twice. */
export function syncsOf(definitions: readonly SyncDefinition[]): Sync[] {
  if (!Array.isArray(definitions)) throw new ConfigError("syncs: must be an array of defineSync({...}) declarations");
  const syncs = definitions.map((definition) => defineSync(definition));
  checkSyncs(syncs);
  return syncs;
}

/** The relay of a worker that serves syncs (see runWorker's `syncs`). */
export function createSyncRelay(options: {
  pool: DatabasePool;
  /** Where the relay LISTENs (a URL that keeps sessions), or null to poll only. */
  listenUrl: string | null;
  qdrant: QdrantClient;
  points: PointWrites;
  qdrantTimeoutMs: number;
  writeOrdering: WriteOrdering;
  syncs: readonly Sync[];
  relay: RelayOptions | undefined;
  log: Logger;
}): Relay {
  const settings = parseOption("relay", RelaySchema, options.relay);
  if (settings.leaseMs < 2 * options.qdrantTimeoutMs) {
    throw new ConfigError(`relay.leaseMs: must be at least 2 x qdrant.timeoutMs, or a slow request could outlive its lease (got ${settings.leaseMs})`);
  }
  return new Relay({
    pool: options.pool,
    listenUrl: options.listenUrl,
    qdrant: options.qdrant,
    points: options.points,
    syncs: options.syncs,
    log: options.log.child({ component: "relay" }),
    writeOrdering: options.writeOrdering,
    ...settings,
  });
}

/** The reconcile cron item (graphile-worker cron syntax), or none for "off"; a bad schedule is a ConfigError naming `name`. */
export function reconcileCronItems(schedule: string | false | undefined, name: string): CronItem[] {
  if (schedule === undefined || schedule === false || schedule === "off") return [];
  const item: CronItem = { task: RECONCILE_TASK, match: schedule, identifier: RECONCILE_TASK, options: { backfillPeriod: 0, maxAttempts: 3 } };
  try {
    parseCronItems([item]);
  } catch (error) {
    throw new ConfigError(`${name}: ${(error as Error).message.split("\n", 1)[0]} (got ${JSON.stringify(schedule)})`);
  }
  return [item];
}

export { createReconcileTask, RECONCILE_TASK };

/** The CLI's environment as runWorker's sync options. */
export function syncOptionsFromConfig(config: Config, syncs: readonly SyncDefinition[]) {
  return {
    syncs,
    qdrant: {
      url: config.QDRANT_URL,
      ...(config.QDRANT_GRPC_URL ? { grpcUrl: config.QDRANT_GRPC_URL } : {}),
      timeoutMs: config.QDRANT_TIMEOUT_MS,
      writeOrdering: config.QDRANT_WRITE_ORDERING,
      readConsistency: config.QDRANT_READ_CONSISTENCY,
      ...(config.QDRANT_API_KEY ? { apiKey: config.QDRANT_API_KEY } : {}),
    },
    relay: { batchSize: config.RELAY_BATCH_SIZE, pollIntervalMs: config.RELAY_POLL_INTERVAL_MS, leaseMs: config.RELAY_LEASE_MS, maxBackoffMs: config.RELAY_MAX_BACKOFF_MS },
    reconcileCron: config.RECONCILE_CRON,
  } satisfies { syncs: readonly SyncDefinition[]; qdrant: QdrantOptions; relay: RelayOptions; reconcileCron: string };
}

/**
 * Records that these points changed, inside the application's transaction: once it commits,
 * the relay of a worker serving the sync writes each point's current state to Qdrant (or
 * deletes it when `load` no longer returns it). Rolled back, nothing happens. Call it in the
 * same transaction as the rows' insert, update or delete.
 *
 * `db` is what addJob takes: a `pg` client (inside your transaction) or pool, a slonik
 * connection or transaction, or anything with `query(text, values)`. `ids` are the point ids
 * (UUIDs or unsigned integers up to 2^53 - 1). Needs the schema of `migrate()`.
 *
 * ```ts
 * await client.query("begin");
 * await client.query("update products set name = $1 where id = $2", [name, id]);
 * await enqueueSync(client, productSync, [id]);
 * await client.query("commit");
 * ```
 */
export async function enqueueSync(db: Queryable | CommonQueryMethods, sync: SyncDefinition | string, ids: readonly PointId[]): Promise<void> {
  const collection = typeof sync === "string" ? sync : sync?.collection;
  if (typeof collection !== "string" || collection === "") throw new TypeError("enqueueSync: give a sync (defineSync) or its collection name");
  if (!Array.isArray(ids)) throw new TypeError("enqueueSync: ids must be an array of point ids");
  await enqueuePointChanges(db, collection, ids, "enqueueSync");
}

export interface ReconcileOptions {
  /** The Postgres of the syncs' tables (a postgres:// URL); or give `pool`. */
  databaseUrl?: string;
  /** An application's `pg` Pool instead of `databaseUrl`; it is not ended. */
  pool?: pg.Pool;
  /** "transaction" when the URL is a transaction-mode pooler, as runWorker's `databasePoolMode`. Default "session". */
  databasePoolMode?: "session" | "transaction";
  qdrant: QdrantOptions;
  /** The syncs to compare, each declared with defineSync. */
  syncs: readonly SyncDefinition[];
  /**
   * Turn every difference into an outbox change, which the relay of a running worker serving
   * the sync then writes. Default false: only count, so a look at the drift changes nothing.
   */
  repair?: boolean;
  /** Points per Qdrant and Postgres page. Default 1000; memory stays bounded by it. */
  pageSize?: number;
  /** A pino logger. Default: JSON lines on stdout at level "info". */
  logger?: Logger;
}

export type { DriftReport };

/**
 * Compares each sync's collection with its table: points this database owns with no row
 * (extra), rows with no point (missing), points whose hash or payload differs (stale).
 * Points of other databases are never counted or touched. Resolves with one report per sync,
 * also recorded for `pgconverge status`. With `repair`, the differences are queued in the
 * outbox; a worker serving the syncs repairs them.
 */
export async function reconcile(options: ReconcileOptions): Promise<DriftReport[]> {
  if (options.databaseUrl === undefined && options.pool === undefined) throw new ConfigError("reconcile: give databaseUrl or pool");
  const syncs = syncsOf(options.syncs);
  const { client, readConsistency } = await qdrantClientOf(options.qdrant, "reconcile");
  const url = options.databaseUrl ?? urlOfPool(options.pool!);
  const pool = await createAppPool(url, 1, { statementTimeoutMs: CoreShape.shape.APPLY_TIMEOUT_MS.parse(undefined), poolMode: options.databasePoolMode ?? "session" });
  const log = options.logger ?? createLogger("info");
  try {
    const owner = await readOwner(pool);
    const reports: DriftReport[] = [];
    for (const sync of syncs) {
      const report = await reconcileSync({ pool, qdrant: client, sync, owner, readConsistency, repair: options.repair ?? false, ...(options.pageSize ? { pageSize: options.pageSize } : {}) });
      await recordReconcileRun(pool, report);
      log.info({ ...report }, "reconciled");
      reports.push(report);
    }
    return reports;
  } finally {
    await pool.end();
  }
}

/** The postgres:// URL of a pg Pool's connection settings. */
export function urlOfPool(pool: pg.Pool): string {
  const options = (pool as pg.Pool & { options: pg.PoolConfig }).options;
  if (options.connectionString) return options.connectionString;
  const url = new URL("postgres://localhost");
  url.hostname = options.host ?? process.env.PGHOST ?? "localhost";
  url.port = String(options.port ?? process.env.PGPORT ?? 5432);
  url.username = options.user ?? process.env.PGUSER ?? "";
  if (typeof options.password === "string") url.password = options.password;
  url.pathname = `/${options.database ?? process.env.PGDATABASE ?? ""}`;
  return url.toString();
}
