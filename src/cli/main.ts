import { relative } from "node:path";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config.ts";
import { migrate } from "../api/migrate.ts";
import { migrationUrlOf } from "../db/connections.ts";
import { SchemaError } from "../db/migrate.ts";
import { createLogger } from "../log.ts";
import { redactCredentials } from "../redact.ts";
import { describeError } from "../runtime/errors.ts";
import { TaskLoadError } from "../runtime/loadTasks.ts";
import { dashboardCommand } from "./commands/dashboard.ts";
import { jobsListCommand, jobsShowCommand, parseJobState } from "./commands/jobs.ts";
import { dlqDiscardCommand, dlqListCommand, dlqRetryCommand } from "./commands/dlq.ts";
import { outboxListCommand, outboxRetryCommand } from "./commands/outbox.ts";
import { reconcileCommand } from "./commands/reconcile.ts";
import { relayCommand } from "./commands/relay.ts";
import { statusCommand } from "./commands/status.ts";
import { workerCommand } from "./commands/worker.ts";
import { findConfigFile, loadAppConfig, type LoadedConfig } from "./appConfig.ts";
import { appMigrations, openCommandContext, withContext } from "./context.ts";
import { printable } from "./printable.ts";
import { nonBlank, UsageError } from "./usage.ts";

const USAGE = `usage: pgconverge [--config FILE] <command> [options]

commands:
  worker [--tasks DIR]          migrate if needed, then run jobs, relay and reconcile cron until SIGTERM/SIGINT;
                                task files from DIR (default PGCONVERGE_TASKS_DIR, "tasks")
  migrate                       apply graphile-worker's schema and the sql/ migrations
  relay                         run only the outbox relay (Postgres -> Qdrant) until SIGTERM/SIGINT
  reconcile [--collection NAME] [--repair] [--json]
                                count drift between Qdrant and Postgres for every sync (or one);
                                only this database's points are looked at; --repair queues the fixes
  outbox list [--dead] [--collection NAME] [--limit N] [--json]
                                changes not yet in Qdrant, dead ones first
  outbox retry <id>... | --all [--collection NAME]
                                put dead changes back in line once their cause is fixed
  status [--json]               jobs per task and state, dead letters, outbox lag, workers, last reconcile drift
  jobs [--task T] [--state S] [--limit N] [--json]
                                queued jobs, newest first, then finished ones from the job history;
                                S: pending scheduled retrying running exhausted applied dead skipped
  jobs show <id> [--json]       one job: state, payload, failures, history, dead letters
  dashboard                     serve the web dashboard on DASHBOARD_HOST:DASHBOARD_PORT (127.0.0.1:9465) until
                                SIGTERM/SIGINT; read-only unless DASHBOARD_PASSWORD or DASHBOARD_TOKEN is set
  dlq list [--task T] [--limit N] [--json]
                                dead letters (failed jobs), newest first
  dlq retry <id>... | --all [--task T]
                                re-enqueue dead letters as new jobs once their cause is fixed
  dlq discard <id>...           delete dead letters for good

configuration comes from the environment (see .env.example); tasks, services, syncs and more commands
from the application's config file: --config FILE, PGCONVERGE_CONFIG, or pgconverge.config.{ts,mjs,js}
in the working directory`;

/** The help: the core's commands, then the config file's. */
function usage(app: LoadedConfig): string {
  if (app.commands.size === 0) return USAGE;
  const own = [...app.commands].map(([name, command]) => `  ${command.usage.startsWith(name) ? command.usage : `${name}  ${command.usage}`}`);
  return `${USAGE}\n\ncommands of ${relative(process.cwd(), app.file!) || app.file}:\n${own.join("\n")}`;
}

/** The flags each command takes; any other is a usage error rather than silently ignored. */
const COMMAND_FLAGS: Record<string, readonly string[]> = {
  worker: ["tasks"],
  relay: [],
  migrate: [],
  reconcile: ["repair", "json", "collection"],
  outbox: ["dead", "limit", "json", "all", "collection"],
  status: ["json"],
  dlq: ["task", "limit", "json", "all"],
  jobs: ["task", "state", "limit", "json"],
  dashboard: [],
};

const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;

/** `--config FILE` (or `--config=FILE`) before the command, taken out of the arguments. */
function takeConfigFlag(argv: string[]): { file: string | undefined; args: string[] } {
  const args = [...argv];
  const at = args.findIndex((arg) => arg === "--config" || arg.startsWith("--config="));
  const first = args.findIndex((arg) => !arg.startsWith("-"));
  if (at === -1 || (first !== -1 && first < at)) return { file: undefined, args };
  const [flag] = args.splice(at, 1);
  const file = flag!.includes("=") ? flag!.slice("--config=".length) : args.splice(at, 1)[0];
  if (file === undefined || file.trim() === "" || (file.startsWith("-") && !flag!.includes("="))) throw new UsageError("--config needs a file");
  return { file, args };
}

async function main(argv: string[]): Promise<number> {
  const split = takeConfigFlag(argv);
  const app = await loadAppConfig(findConfigFile(split.file, process.env, process.cwd()), Object.keys(COMMAND_FLAGS));
  // A command of the config file parses its own arguments.
  const first = split.args.find((arg) => !arg.startsWith("-"));
  const own = first === undefined ? undefined : app.commands.get(first);
  if (own && split.args[0] === first) {
    const config = loadConfig();
    const log = createLogger(config.LOG_LEVEL, 2);
    const context = await openCommandContext(config, log, app);
    try {
      return await own.run(split.args.slice(1), context);
    } finally {
      await context.close();
    }
  }
  const { positionals, values } = parseArgs({
    args: split.args,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      json: { type: "boolean", default: false },
      repair: { type: "boolean", default: false },
      dead: { type: "boolean", default: false },
      all: { type: "boolean", default: false },
      limit: { type: "string" },
      task: { type: "string" },
      state: { type: "string" },
      collection: { type: "string" },
      tasks: { type: "string" },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || command === "help") {
    console.log(usage(app));
    return 0;
  }
  if (!command) throw new UsageError("a command is required");
  const taken = COMMAND_FLAGS[command];
  if (!taken) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  const flag = Object.entries(values).find(([name, value]) => name !== "help" && value !== undefined && value !== false && !taken.includes(name));
  if (flag) throw new UsageError(`${command} does not take --${flag[0]}`);
  const noArguments = () => {
    if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])}`);
  };
  const limit = values.limit === undefined ? undefined : Number(values.limit);
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1 && limit <= 100_000)) {
    throw new UsageError(`--limit must be a whole number from 1 to 100000 (got ${JSON.stringify(values.limit)})`);
  }
  // A blank --task matches nothing.
  const task = nonBlank("task", values.task);
  const config = loadConfig();
  // Commands that print results keep stdout for them; logs go to stderr.
  const log = createLogger(config.LOG_LEVEL, command === "worker" || command === "relay" || command === "dashboard" ? 1 : 2);
  switch (command) {
    case "worker":
      noArguments();
      return workerCommand(config, log, app, values.tasks === undefined ? {} : { tasksDir: values.tasks });
    case "relay":
      noArguments();
      return relayCommand(config, log, app.syncs());
    case "migrate":
      noArguments();
      return withContext(config, log, 1, async (context) => {
        const app = appMigrations(config);
        const applied = await migrate({ pool: context.queuePool, databaseDirectUrl: migrationUrlOf(context.database) ?? undefined, logger: log, ...(app ? { app } : {}) });
        console.log(applied.length ? `applied ${applied.join(", ")}` : "schema is up to date");
        return 0;
      }, { migrates: true });
    case "reconcile":
      noArguments();
      return reconcileCommand(config, log, app.syncs(), { repair: values.repair, json: values.json, collection: values.collection });
    case "outbox": {
      const [sub, ...ids] = rest;
      if (sub === "list" && ids.length === 0) return outboxListCommand(config, log, { dead: values.dead, limit: limit ?? 50, json: values.json, collection: values.collection });
      if (sub === "retry") return outboxRetryCommand(config, log, ids, values.all, values.collection);
      throw new UsageError(sub ? `unknown outbox command ${JSON.stringify(sub)}` : "outbox needs list or retry");
    }
    case "status":
      noArguments();
      return statusCommand(config, log, { json: values.json });
    case "dashboard":
      noArguments();
      return dashboardCommand(config, log, app.syncs());
    case "jobs": {
      const [sub, ...ids] = rest;
      if (sub === "show") {
        if (task !== undefined || values.state !== undefined || limit !== undefined) throw new UsageError("jobs show takes a job id and --json only");
        return jobsShowCommand(config, log, ids, { json: values.json });
      }
      if (sub !== undefined) throw new UsageError(`unknown jobs command ${JSON.stringify(sub)} (jobs lists; jobs show <id> shows one)`);
      return jobsListCommand(config, log, { limit: limit ?? 50, json: values.json, ...(task === undefined ? {} : { task }), ...(values.state === undefined ? {} : { state: parseJobState(values.state)! }) });
    }
    case "dlq": {
      const [sub, ...ids] = rest;
      if (sub === "list") {
        if (ids.length > 0) throw new UsageError(`dlq list: unexpected argument ${JSON.stringify(ids[0])}`);
        return dlqListCommand(config, log, { limit: limit ?? 50, json: values.json, ...(task === undefined ? {} : { task }) });
      }
      if (sub === "retry") return dlqRetryCommand(config, log, ids, { all: values.all, ...(task === undefined ? {} : { task }) });
      if (sub === "discard" && task === undefined) return dlqDiscardCommand(config, log, ids);
      if (sub === "discard") throw new UsageError("dlq discard takes ids only, not --task");
      throw new UsageError(sub ? `unknown dlq command ${JSON.stringify(sub)}` : "dlq needs list, retry or discard");
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

function isUsageError(error: unknown): boolean {
  return error instanceof UsageError || Boolean((error as NodeJS.ErrnoException | null)?.code?.startsWith("ERR_PARSE_ARGS"));
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const usage = isUsageError(error);
    // A database whose schema is not this version's is a setup problem, like bad configuration:
    // retrying cannot fix it, running `pgconverge migrate` (or pointing at the right database) does.
    const code = usage || error instanceof ConfigError || error instanceof TaskLoadError || error instanceof SchemaError ? EXIT_USAGE : EXIT_RUNTIME;
    const line = code === EXIT_USAGE ? redactCredentials((error as Error).message) : describeError(error);
    console.error(`pgconverge: ${printable(line)}${usage ? " (see pgconverge --help)" : ""}`);
    process.exit(code);
  },
);
