import type pg from "pg";
import type { DatabasePool } from "slonik";
import type { PoolMode } from "../db/connections.ts";
import type { MigrationOptions } from "../db/migrate.ts";
import type { Logger } from "../log.ts";
import type { BatchReport } from "../outbox/relay.ts";
import { Metrics, type Emits } from "./metrics.ts";
import { createProbePool } from "./probePool.ts";
import { createReadinessCheck } from "./readiness.ts";
import { OpsServer } from "./server.ts";

/**
 * Deadline of each scrape-time query and of a readiness check. Short, because a probe that
 * waits longer than Prometheus' or Kubernetes' own timeout (10 s and 1 s by default) answers
 * nobody; long enough for a loaded database to count a queue.
 */
export const PROBE_TIMEOUT_MS = 2_000;

export interface OpsServiceConfig {
  /** METRICS_HOST. */
  host: string;
  /** METRICS_PORT (0 here picks a free port; the worker command skips the service when it is 0). */
  port: number;
  log: Logger;
  /** The database the probes connect to, through a pool of their own. */
  databaseUrl: string;
  /** How databaseUrl keeps sessions (DATABASE_POOL_MODE); default "session". */
  poolMode?: PoolMode;
  /** QDRANT_COLLECTION, for the outbox and drift gauges. */
  collection: string;
  /** WORKER_DEAD_AFTER_MS, for the alive/dead worker gauge. */
  deadAfterMs: number;
  tasks?: readonly string[];
  queuePool?: pg.Pool;
  appPool?: DatabasePool;
  relay?: Emits<"batch", BatchReport>;
  heartbeat?: Emits<"beat", { ok: boolean }>;
  probeTimeoutMs?: number;
  /** The migrations /readyz expects: the files of sql/ by default, and the application's set when given. */
  migrations?: MigrationOptions;
}

/** Metrics, health and readiness of one worker process: the registry, the probe pool and the HTTP server. */
export class OpsService {
  readonly metrics: Metrics;
  readonly server: OpsServer;
  private readonly probePool: pg.Pool;
  private stopped = false;

  constructor(config: OpsServiceConfig) {
    const timeoutMs = config.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
    const log = config.log.child({ component: "metrics" });
    this.probePool = createProbePool(config.databaseUrl, { timeoutMs, poolMode: config.poolMode ?? "session" });
    this.metrics = new Metrics({
      log,
      tasks: config.tasks,
      queuePool: config.queuePool,
      appPool: config.appPool,
      database: { pool: this.probePool, collection: config.collection, deadAfterMs: config.deadAfterMs },
    });
    if (config.relay) this.metrics.observeRelay(config.relay);
    if (config.heartbeat) this.metrics.observeHeartbeat(config.heartbeat);
    this.server = new OpsServer({
      host: config.host,
      port: config.port,
      log,
      metrics: this.metrics,
      readiness: createReadinessCheck({ pool: this.probePool, timeoutMs, migrations: config.migrations }),
    });
  }

  get url(): string {
    return this.server.url;
  }

  /** Binds the endpoints; a port in use is a ConfigError (exit code 2). */
  async start(): Promise<void> {
    await this.server.start();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.server.stop();
    this.metrics.close();
    await this.probePool.end();
  }
}
