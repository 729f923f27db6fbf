import { pino, type Logger } from "pino";
import { Logger as GraphileLogger, type LogFunctionFactory } from "graphile-worker";
import { describeError } from "./runtime/errors.ts";

export type { Logger };

/**
 * One JSON line per event on stdout (pipe it through `pino-pretty` to read it by eye).
 * Expected failures are logged as one line with the reason, never a stack.
 */
export function createLogger(level: string, fd: 1 | 2 = 1): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd, sync: true }));
}

/** graphile-worker's per-job lines, which the executor already logs with job id, task and attempt. */
const PER_JOB_MESSAGE = /^(Completed task|Failed task)/;

/** Routes graphile-worker's own log lines into our logger, one line each, without stacks. */
export function graphileLogger(log: Logger): GraphileLogger {
  const factory: LogFunctionFactory = (scope) => {
    const child = log.child({ component: "graphile-worker", ...scope });
    return (level, message, meta) => {
      const method = PER_JOB_MESSAGE.test(message) ? "debug" : level === "warning" ? "warn" : level;
      const fields = meta?.error ? { error: describeError(meta.error) } : {};
      child[method](fields, message.split("\n", 1)[0]);
    };
  };
  return new GraphileLogger(factory);
}
