import { createRequire } from "node:module";
import { isatty } from "node:tty";
import { pino, type DestinationStream, type Logger } from "pino";
import { Logger as GraphileLogger, type LogFunctionFactory } from "graphile-worker";
import { printable } from "./cli/printable.ts";
import { redactCredentials } from "./redact.ts";
import { describeError } from "./runtime/errors.ts";

export type { Logger };

/**
 * One JSON line per event; on a terminal (or with `pretty`), one human-readable line per
 * event instead. Both write synchronously, so the last lines before an exit are not lost.
 * Expected failures are logged as one line with the reason, never a stack. Credentials in any
 * URL a line holds (a setting, an error message of a client) are redacted from the whole line.
 */
export function createLogger(level: string, fd: 1 | 2 = 1, pretty = isatty(fd)): Logger {
  const destination = pino.destination({ fd, sync: true });
  return pino({ level, base: { pid: process.pid }, hooks: { streamWrite: redactCredentials } }, pretty ? prettyDestination(destination) : destination);
}

/**
 * pino-pretty's formatter in this thread (its stream form goes through an asynchronous
 * pipeline): one line per event, fields after the message, local time, no pid or hostname.
 */
function prettyDestination(destination: DestinationStream): DestinationStream {
  // Loaded only here: most processes (workers, a pipe, the tests) never print to a terminal.
  const { prettyFactory } = createRequire(import.meta.url)("pino-pretty") as typeof import("pino-pretty");
  // Our `error` fields are already one-line strings; as an "error-like" key pino-pretty would
  // print them on lines of their own.
  const format = prettyFactory({ singleLine: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", errorLikeObjectKeys: ["err"] });
  // On a terminal, text from stored data (a task name, an error quoting a document) must not
  // drive it: every string is made printable before pino-pretty writes it out raw.
  const printableStrings = (_key: string, value: unknown) => (typeof value === "string" ? printable(value) : value);
  return { write: (line: string) => destination.write(format(JSON.stringify(JSON.parse(line), printableStrings))) };
}

/**
 * graphile-worker lines demoted to debug: its per-job lines, which the executor already logs
 * with job id, task and attempt, and its warning that the pool is smaller than the
 * concurrency, which pgconverge's pool is on purpose (src/db/pools.ts).
 */
const DEBUG_MESSAGE = /^(Completed task|Failed task|WARNING: having maxPoolSize)/;

/** Routes graphile-worker's own log lines into our logger, one line each, without stacks. */
export function graphileLogger(log: Logger): GraphileLogger {
  const factory: LogFunctionFactory = (scope) => {
    // graphile-worker scopes a logger per job, and most of those lines are below the level:
    // the child is made on the first line that is written.
    let child: Logger | undefined;
    return (level, message, meta) => {
      // Demoting only lowers a line's level: one below the level as it came is not even matched.
      const asCame = level === "warning" ? "warn" : level;
      if (!log.isLevelEnabled(asCame)) return;
      const method = DEBUG_MESSAGE.test(message) ? "debug" : asCame;
      if (method !== asCame && !log.isLevelEnabled(method)) return;
      child ??= log.child({ component: "graphile-worker", ...scope });
      // A failed outcome batch puts its error under fatalError.
      const error = meta?.error ?? meta?.fatalError;
      const fields = error ? { error: describeError(error) } : {};
      child[method](fields, message.split("\n", 1)[0]);
    };
  };
  return new GraphileLogger(factory);
}
