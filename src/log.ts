import { pino, type Logger } from "pino";
import { Logger as GraphileLogger, type LogFunctionFactory } from "graphile-worker";

export type { Logger };

/**
 * One JSON line per event on stdout; pino-pretty is not a dependency, so a terminal
 * gets the same JSON (pipe it through `pino-pretty` when reading by eye).
 */
export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid } });
}

/** Routes graphile-worker's own log lines into our logger, keeping its scope fields. */
export function graphileLogger(log: Logger): GraphileLogger {
  const factory: LogFunctionFactory = (scope) => {
    const child = log.child({ component: "graphile-worker", ...scope });
    return (level, message, meta) => {
      const method = level === "warning" ? "warn" : level;
      child[method]({ ...(meta?.error ? { err: meta.error } : {}) }, message);
    };
  };
  return new GraphileLogger(factory);
}
