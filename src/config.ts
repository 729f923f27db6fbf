import { z } from "zod";
import { ConfigError, int } from "./configFields.ts";
import { PipelineShape } from "./pipeline/config.ts";

export { ConfigError, int } from "./configFields.ts";

/**
 * The queue's settings (core): database, worker, liveness, metrics, outbox relay and
 * reconciler, each with its default. runWorker's options are the worker's part of these, by
 * camelCase names. `.env.example` documents the same list; keep the two in step.
 */
export const CoreShape = z.object({
  /** Postgres to use; unset means an embedded Postgres kept under PGCONVERGE_DATA_DIR. */
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "must be a postgres:// or postgresql:// URL")
    .optional(),
  /** Where the embedded Postgres keeps its data between runs (only without DATABASE_URL). */
  PGCONVERGE_DATA_DIR: z.string().min(1).default(".pgconverge"),
  /** Directory of task files, one task per file, named after its identifier (graphile-worker's convention). */
  PGCONVERGE_TASKS_DIR: z.string().min(1).default("tasks"),
  /** Jobs one worker process runs at once; both connection pools are sized from it. */
  WORKER_CONCURRENCY: int(1, 1000).default(10),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /** Port of the worker's /metrics, /healthz and /readyz; 0 disables them. 9464 is the usual Prometheus exporter port. */
  METRICS_PORT: int(0, 65_535).default(9464),
  /** Interface the metrics server binds; the default keeps it off the network (0.0.0.0 exposes it). */
  METRICS_HOST: z.string().regex(/^[^\s/]+$/, "must be a host name or IP address").default("127.0.0.1"),
  /** Deadline of a task's prepare phase (external I/O); on expiry its AbortSignal fires and the job is retried. */
  TASK_TIMEOUT_MS: int(100, 86_400_000).default(60_000),
  /** statement_timeout inside a task's apply transaction, so a stuck apply cannot hold locks forever. */
  APPLY_TIMEOUT_MS: int(100, 3_600_000).default(30_000),
  /** Fallback poll for jobs that become due (retries, run_at); new jobs arrive by LISTEN/NOTIFY. */
  POLL_INTERVAL_MS: int(50, 600_000).default(2_000),
  /** Most jobs whose apply phases share one transaction (group commit); 1 commits every job alone. */
  APPLY_BATCH_SIZE: int(1, 1000).default(64),
  /** Jobs fetched and locked per query and handed out locally, with completions batched too; 1 fetches one job per query. */
  WORKER_LOCAL_QUEUE_SIZE: int(1, 1000).default(1),
  /** How often a worker records that it is alive. */
  HEARTBEAT_INTERVAL_MS: int(100, 600_000).default(2_000),
  /**
   * A worker whose last heartbeat is older than this is dead and its jobs are released. With
   * SWEEP_INTERVAL_MS and POLL_INTERVAL_MS it bounds how soon a crashed worker's job runs again
   * (15 s + 2 s + 2 s at the defaults); 7 missed beats leave room for a slow database.
   */
  WORKER_DEAD_AFTER_MS: int(1_000, 86_400_000).default(15_000),
  /** How often a worker looks for dead workers, exhausted jobs and prunable ledger rows. */
  SWEEP_INTERVAL_MS: int(100, 600_000).default(2_000),
  /** On SIGTERM/SIGINT: how long in-flight jobs may finish before they are aborted and released. */
  SHUTDOWN_TIMEOUT_MS: int(0, 3_600_000).default(15_000),
  QDRANT_URL: z.string().regex(/^https?:\/\/[^\s]+$/, "must be an http:// or https:// URL").default("http://127.0.0.1:6333"),
  QDRANT_API_KEY: z.string().min(1).optional(),
  /** Deadline of each Qdrant request, ms. */
  QDRANT_TIMEOUT_MS: int(100, 600_000).default(10_000),
  /** Outbox changes per Qdrant request. */
  RELAY_BATCH_SIZE: int(1, 1000).default(128),
  /** Relay's fallback poll, ms; commits wake it by LISTEN/NOTIFY at once. */
  RELAY_POLL_INTERVAL_MS: int(50, 600_000).default(5_000),
  /** How long a claimed change stays one relay's; must exceed 2 x QDRANT_TIMEOUT_MS. */
  RELAY_LEASE_MS: int(1_000, 3_600_000).default(60_000),
  /** Cap of the relay's exponential backoff after transient Qdrant failures, ms. */
  RELAY_MAX_BACKOFF_MS: int(100, 3_600_000).default(60_000),
  /** When the worker compares Qdrant with Postgres and repairs drift (cron syntax), or "off". */
  RECONCILE_CRON: z.string().min(1).default("0 * * * *"),
});

/** Cross-setting rules of the core settings (one-line messages naming the variable). */
export function coreRules(env: z.infer<typeof CoreShape>, context: z.RefinementCtx): void {
  if (env.WORKER_DEAD_AFTER_MS < 3 * env.HEARTBEAT_INTERVAL_MS) {
    context.addIssue({
      code: z.ZodIssueCode.custom,
      path: ["WORKER_DEAD_AFTER_MS"],
      message: "must be at least 3 x HEARTBEAT_INTERVAL_MS, or a live worker that misses one beat is declared dead",
    });
  } else if (env.RELAY_LEASE_MS < 2 * env.QDRANT_TIMEOUT_MS) {
    context.addIssue({
      code: z.ZodIssueCode.custom,
      path: ["RELAY_LEASE_MS"],
      message: "must be at least 2 x QDRANT_TIMEOUT_MS, or a slow request could outlive its lease",
    });
  }
}

/** What the CLI reads: the core settings and the reference pipeline's. */
const EnvShape = CoreShape.merge(PipelineShape);
const EnvSchema = EnvShape.superRefine(coreRules);

export type Config = z.infer<typeof EnvSchema>;

/** The names of every variable loadConfig reads. */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(EnvShape.shape);

/** Reads and validates the configuration; throws ConfigError naming the first bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(
    CONFIG_VARIABLES.filter((key) => env[key] !== undefined && env[key] !== "").map((key) => [key, env[key]]),
  );
  const parsed = EnvSchema.safeParse(present);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const name = String(issue.path[0] ?? "environment");
  const got = present[name] === undefined ? "" : ` (got ${JSON.stringify(present[name])})`;
  throw new ConfigError(`${name}: ${issue.message}${got}`);
}
