import pg from "pg";
import { parseDsn } from "slonik";
import { z, type ZodIssue } from "zod";
import { ConfigError, int, problemsOf, URL_SYNTAX } from "./configFields.ts";
import { parseLimitList } from "./flow/options.ts";

export { ConfigError, int } from "./configFields.ts";

/** A "name=n,other=m" setting as a record; a bad one is the setting's one-line error. */
function limitList(value: string, context: z.RefinementCtx): Record<string, number> {
  try {
    return parseLimitList(value);
  } catch (error) {
    context.addIssue({ code: z.ZodIssueCode.custom, message: (error as Error).message });
    return z.NEVER;
  }
}

/** Qdrant's read consistency: a number of replicas, or which of them must agree. */
export type ReadConsistency = number | "majority" | "quorum" | "all";

/**
 * Why DATABASE_URL would be refused, or null. It is parsed the way it will be used: by pg
 * (graphile-worker's pool) and by slonik (the application's pool), which accept different
 * things (slonik knows fewer sslmode values, pg decodes a stray % literally where slonik
 * throws), so that a URL either works for both or stops the process here. The message never
 * contains the URL: it may hold a password.
 */
function databaseUrlProblem(value: string): string | null {
  if (!/^postgres(ql)?:\/\//.test(value)) return "must be a postgres:// or postgresql:// URL";
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return URL_SYNTAX;
  }
  const parts = { "user name": url.username, password: url.password, host: url.hostname, "database name": url.pathname };
  for (const [part, text] of Object.entries(parts)) {
    try {
      decodeURIComponent(text);
    } catch {
      return `the ${part} has a % that is not followed by two hex digits (write a literal % as %25)`;
    }
  }
  // postgres://user:12/3@host/db parses as host "user", port 12 and database "3@host/db".
  if (url.pathname.includes("@")) return "the database name contains @: percent-encode @ : / ? # % in the password";
  const secrets = [url.password, safeDecode(url.password)].filter((secret) => secret.length > 0);
  const hide = (message: string) => secrets.reduce((text, secret) => text.split(secret).join("****"), message.split("\n", 1)[0]!);
  try {
    parseDsn(value);
  } catch (error) {
    // slonik validates the query parameters with its own copy of zod: recognise the error by shape.
    const issue = (error as { issues?: ZodIssue[] }).issues?.[0];
    if (issue) {
      const rule = "options" in issue ? `must be one of ${(issue.options as unknown[]).join(", ")}` : issue.message;
      const received = "received" in issue ? ` (got ${JSON.stringify(issue.received)})` : "";
      return hide(`${String(issue.path[0])} ${rule}${received}`);
    }
    return hide((error as Error).message);
  }
  try {
    new pg.Client({ connectionString: value });
  } catch (error) {
    return hide((error as Error).message);
  }
  return null;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Why a URL setting (QDRANT_URL) is not an http(s) URL the clients can parse, or null. */
function httpUrlProblem(value: string): string | null {
  if (!/^https?:\/\//.test(value)) return "must be an http:// or https:// URL";
  if (!URL.canParse(value)) return URL_SYNTAX;
  return null;
}

/** FLOW_SERVICE_RATES: "ollama=20,qdrant=50.5" as { ollama: 20, qdrant: 50.5 }. */
function parseServiceRates(value: string, context: z.RefinementCtx): Record<string, number> {
  const rates: Record<string, number> = {};
  for (const part of value.split(",").map((each) => each.trim()).filter((each) => each !== "")) {
    const match = /^([a-z][a-z0-9_.-]{0,62})=([0-9]+(?:\.[0-9]+)?)$/.exec(part);
    if (!match || Number(match[2]) <= 0) {
      context.addIssue({ code: z.ZodIssueCode.custom, message: `must be NAME=RATE[,NAME=RATE...] with lowercase service names and rates > 0 per second (bad part ${JSON.stringify(part)})` });
      return z.NEVER;
    }
    rates[match[1]!] = Number(match[2]);
  }
  return rates;
}

/**
 * The queue's settings (core): database, worker, liveness, metrics, outbox relay and
 * reconciler, each with its default. runWorker's options are the worker's part of these, by
 * camelCase names. `.env.example` documents the same list; keep the two in step.
 */
export const CoreShape = z.object({
  /** Postgres to use; unset means an embedded Postgres kept under PGCONVERGE_DATA_DIR. */
  DATABASE_URL: z.string().superRefine(problemsOf(databaseUrlProblem)).optional(),
  /**
   * How DATABASE_URL keeps sessions: "session" for a direct connection or a session-mode pooler,
   * "transaction" for a transaction-mode pooler (PgBouncer's pool_mode=transaction, managed
   * poolers), through which pgconverge then keeps no session state: no startup parameters, no
   * named prepared statements, timeouts set per transaction, no LISTEN and no session locks.
   * Left at "session" in front of a transaction-mode pooler, commands stop at start with exit code 2.
   */
  DATABASE_POOL_MODE: z.enum(["session", "transaction"]).default("session"),
  /**
   * With DATABASE_POOL_MODE=transaction: a direct (session) connection to the same database for
   * what needs a session: LISTEN (new jobs and outbox changes wake workers at once, one
   * connection per worker) and migrations. Unset: workers find jobs and changes by polling
   * (POLL_INTERVAL_MS, RELAY_POLL_INTERVAL_MS) and migrations go through the pooler.
   */
  DATABASE_DIRECT_URL: z.string().superRefine(problemsOf(databaseUrlProblem)).optional(),
  /** Where the embedded Postgres keeps its data between runs (only without DATABASE_URL). */
  PGCONVERGE_DATA_DIR: z.string().min(1).default(".pgconverge"),
  /** Directory of task files, one task per file, named after its identifier (graphile-worker's convention). */
  PGCONVERGE_TASKS_DIR: z.string().min(1).default("tasks"),
  /**
   * The application's own migrations, applied by `migrate` and `worker` after pgconverge's:
   * DIR (a set named "app") or NAME=DIR. Unset: pipeline/sql (the set "pipeline") when that
   * directory exists in the working directory, else none.
   */
  PGCONVERGE_APP_MIGRATIONS: z
    .string()
    .regex(/^(?:[a-z][a-z0-9_-]{0,62}=)?[^=]+$/, "must be DIR or NAME=DIR (NAME: lowercase letters, digits, _ and -, starting with a letter)")
    .refine((value) => !value.startsWith("pgconverge"), "its set name must not begin with pgconverge")
    .optional(),
  /**
   * Jobs one worker process runs at once. A slot that waits (for its batch's commit, for a
   * connection, for a limit) holds no connection: each pool opens one per slot only up to 10,
   * so many slots cost memory, not connections. 100 lets small transactional jobs share
   * commits (group commit); external calls are bounded by the flow-control limits, not by it.
   */
  WORKER_CONCURRENCY: int(1, 1000).default(100),
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
  /**
   * Jobs fetched and locked per query and handed out locally, with completions batched too; 1
   * fetches one job per query. Jobs wait in it only while every slot is busy, locked to this
   * worker (released if it dies, or after graphile-worker's TTL); lower it when jobs are long
   * and several workers should share a small backlog evenly.
   */
  WORKER_LOCAL_QUEUE_SIZE: int(1, 1000).default(100),
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
  /**
   * Days of job history (job_history) kept, in whole UTC days: older daily partitions are
   * dropped by the sweeper (hourly), so pruning costs the same at any size. Default 7.
   */
  JOB_HISTORY_RETENTION_DAYS: int(1, 3650).default(7),
  // Flow control (fleet-wide concurrency limits, sql/000005).
  /**
   * Fleet-wide limits per task, "task=n,other=m": at most n jobs of the task run at once across
   * every worker (over the task's own flow.concurrency). Each worker writes its limits at start;
   * the latest start wins, so give every worker the same value. Default: the tasks' own.
   */
  FLOW_TASK_CONCURRENCY: z.string().transform(limitList).optional(),
  /** Sizes of the named limits that tasks join with flow.queue, "name=n,other=m"; every such name needs one. */
  FLOW_QUEUE_CONCURRENCY: z.string().transform(limitList).optional(),
  /** On SIGTERM/SIGINT: how long in-flight jobs may finish before they are aborted and released. */
  SHUTDOWN_TIMEOUT_MS: int(0, 3_600_000).default(15_000),
  /** Interface `pgconverge dashboard` binds; the default keeps it off the network. */
  DASHBOARD_HOST: z.string().regex(/^[^\s/]+$/, "must be a host name or IP address").default("127.0.0.1"),
  /** Port of `pgconverge dashboard`. */
  DASHBOARD_PORT: int(1, 65_535).default(9465),
  /** User name for the dashboard's actions (HTTP Basic, with DASHBOARD_PASSWORD). */
  DASHBOARD_USER: z.string().regex(/^[^:\s]+$/, "must be a user name without blanks or colons").default("admin"),
  /** Password for the dashboard (HTTP Basic). Unset, with no DASHBOARD_TOKEN: the dashboard is read-only. */
  DASHBOARD_PASSWORD: z.string().min(12, "must be at least 12 characters").optional(),
  /** Token for the dashboard (Authorization: Bearer), for scripts. */
  DASHBOARD_TOKEN: z.string().min(20, "must be at least 20 characters").optional(),
  /** A read-only login (e.g. one granted pgconverge_reader) the dashboard connects as when it is read-only; unset: DATABASE_URL. */
  DASHBOARD_READER_DATABASE_URL: z.string().superRefine(problemsOf(databaseUrlProblem)).optional(),
  QDRANT_URL: z.string().superRefine(problemsOf(httpUrlProblem)).default("http://127.0.0.1:6333"),
  QDRANT_API_KEY: z.string().min(1).optional(),
  /**
   * Qdrant's gRPC URL (its port 6334), e.g. http://127.0.0.1:6334. When set, the relay writes
   * points over gRPC (vectors as packed float32, a fraction of JSON's CPU on both sides);
   * Qdrant's version is checked on both; collections and the reconciler stay on QDRANT_URL.
   * Unset: all REST.
   */
  QDRANT_GRPC_URL: z.string().superRefine(problemsOf(httpUrlProblem)).optional(),
  /** Deadline of each Qdrant request, ms. */
  QDRANT_TIMEOUT_MS: int(100, 600_000).default(10_000),
  /**
   * Qdrant's `ordering` of the relay's writes on a replicated collection: weak, medium (writes go
   * through a dynamically elected leader, so replicas apply them in one order) or strong (a fixed
   * leader; writes fail while it is down). Default medium: version stamps already make the order
   * of upserts irrelevant, but a late upsert after a delete would re-create the point on a replica
   * that saw the two in the other order. No effect on a single node.
   */
  QDRANT_WRITE_ORDERING: z.enum(["weak", "medium", "strong"]).default("medium"),
  /**
   * Qdrant's read `consistency` of the reconciler's scrolls and retrieves: majority, quorum, all,
   * or a number of replicas. Default majority, so one lagging replica does not report drift.
   */
  QDRANT_READ_CONSISTENCY: z
    .union([z.number(), z.string()])
    .refine((value) => /^(majority|quorum|all|[1-9][0-9]{0,2})$/.test(String(value)), "must be majority, quorum, all or a number of replicas from 1 to 999")
    .transform((value): ReadConsistency => (/^[0-9]+$/.test(String(value)) ? Number(value) : (value as ReadConsistency)))
    .default("majority"),
  /** Outbox changes per Qdrant request. */
  RELAY_BATCH_SIZE: int(1, 1000).default(128),
  /** Relay's fallback poll, ms; commits wake it by LISTEN/NOTIFY at once. */
  RELAY_POLL_INTERVAL_MS: int(50, 600_000).default(5_000),
  /** How long a claimed change stays one relay's; must exceed 2 x QDRANT_TIMEOUT_MS. */
  RELAY_LEASE_MS: int(1_000, 3_600_000).default(60_000),
  /** Cap of the relay's exponential backoff after transient Qdrant failures, ms. */
  RELAY_MAX_BACKOFF_MS: int(100, 3_600_000).default(60_000),
  // Flow control of external services (src/flow/serviceGate.ts).
  /**
   * Fleet-wide rate limits of the services tasks call through callService, NAME=RATE[,NAME=RATE...]
   * in requests (or cost units) per second, e.g. "ollama=20,qdrant=50". A service not named
   * has no rate limit (its 429 pause and circuit breaker still apply). Default none.
   */
  FLOW_SERVICE_RATES: z.string().transform((value, context) => parseServiceRates(value, context)).default(""),
  /** Consecutive failures of a service (connection refused, 5xx, timeouts) that open its circuit for the whole fleet. */
  BREAKER_FAILURE_THRESHOLD: int(1, 10_000).default(5),
  /** How long an open circuit defers the calls (their jobs wait, attempts unused) before one probe tries the service, ms. */
  BREAKER_OPEN_MS: int(100, 86_400_000).default(30_000),
  /** When the worker compares Qdrant with Postgres and repairs drift (cron syntax), or "off". */
  RECONCILE_CRON: z.string().min(1).default("0 * * * *"),
});

/** Cross-setting rules of the core settings (one-line messages naming the variable). */
export function coreRules(env: z.infer<typeof CoreShape>, context: z.RefinementCtx): void {
  if (env.DATABASE_POOL_MODE === "transaction" && env.DATABASE_URL === undefined) {
    context.addIssue({ code: z.ZodIssueCode.custom, path: ["DATABASE_POOL_MODE"], message: "transaction needs DATABASE_URL (the embedded Postgres has no pooler)" });
  } else if (env.DATABASE_DIRECT_URL !== undefined && env.DATABASE_POOL_MODE !== "transaction") {
    context.addIssue({
      code: z.ZodIssueCode.custom,
      path: ["DATABASE_DIRECT_URL"],
      message: "is used only with DATABASE_POOL_MODE=transaction (DATABASE_URL itself keeps sessions otherwise)",
    });
  } else if (env.WORKER_DEAD_AFTER_MS < 3 * env.HEARTBEAT_INTERVAL_MS) {
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

/** What the CLI reads: the core settings (an application reads its own, e.g. in its config file). */
const EnvShape = CoreShape;
const EnvSchema = EnvShape.superRefine(coreRules);

export type Config = z.infer<typeof EnvSchema>;

/** The names of every variable loadConfig reads. */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(EnvShape.shape);

/** Variables whose value is never repeated in an error line: they may hold a password or key. */
const SECRET_VARIABLES = new Set(["DATABASE_URL", "DATABASE_DIRECT_URL", "QDRANT_API_KEY", "DASHBOARD_PASSWORD", "DASHBOARD_TOKEN", "DASHBOARD_READER_DATABASE_URL"]);

/** Reads and validates the configuration; throws ConfigError naming the first bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(
    CONFIG_VARIABLES.filter((key) => env[key] !== undefined && env[key] !== "").map((key) => [key, env[key]]),
  );
  const parsed = EnvSchema.safeParse(present);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const name = String(issue.path[0] ?? "environment");
  const got = present[name] === undefined || SECRET_VARIABLES.has(name) ? "" : ` (got ${JSON.stringify(present[name])})`;
  throw new ConfigError(`${name}: ${issue.message}${got}`);
}
