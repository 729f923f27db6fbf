import { TimeoutError } from "p-timeout";
import { ZodError } from "zod";
import { redactCredentials } from "../redact.ts";

/**
 * Marks a PermanentError by a registry symbol rather than by class identity, so one thrown by
 * another copy of this module (an application's task importing a second install of the
 * package) is still recognised.
 */
const PERMANENT = Symbol.for("pgconverge.permanentError");
const DEFERRED = Symbol.for("pgconverge.jobDeferredError");

/**
 * Throw from a task to fail the job at once: no retry, straight to `dead_letters` with this
 * message. Use it for input that no retry can fix (an invalid document, a 4xx from an API);
 * any other error is retried with backoff.
 */
export class PermanentError extends Error {
  override name = "PermanentError";
  readonly [PERMANENT] = true;

  /** True for any PermanentError, from whichever copy of pgconverge threw it. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== PermanentError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[PERMANENT] === true;
  }
}

/**
 * Thrown (by flow control, or by a task) to put the job back until `runAt` without using up an
 * attempt: the job did not fail, it may not run yet (a fleet-wide limit is full, a service is
 * throttled or its circuit is open). The executor parks the job; nothing is recorded as a failure.
 * The job is due again 1 s from the park at the earliest, whatever `runAt` says (see parkJob).
 */
export class JobDeferredError extends Error {
  override name = "JobDeferredError";
  readonly [DEFERRED] = true;
  readonly runAt: Date;

  constructor(message: string, runAt: Date) {
    super(message);
    this.runAt = runAt;
  }

  /** True for any JobDeferredError, from whichever copy of pgconverge threw it (see PERMANENT). */
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (this !== JobDeferredError) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[DEFERRED] === true;
  }
}

/** Flow control could not admit or park the job (its own database trouble): always retried, whatever the cause. */
export class FlowControlError extends Error {
  override name = "FlowControlError";
}

/** A task's prepare phase outlived its deadline; the job is retried. */
export class TaskTimeoutError extends Error {
  override name = "TaskTimeoutError";
}

/**
 * A zod validation error, also from an application's own copy of zod (its task schemas are
 * built with it), which `instanceof ZodError` would miss.
 */
function isZodError(error: unknown): error is ZodError {
  return error instanceof ZodError || (error instanceof Error && error.name === "ZodError" && Array.isArray((error as ZodError).issues));
}

export type ErrorClass = "transient" | "permanent";

/** Socket-level failures that a later attempt can get past. */
export const TRANSIENT_NETWORK_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CLOSED",
]);

/**
 * Postgres SQLSTATEs worth another attempt: serialization failure and deadlock (40xxx),
 * connection trouble (08xxx), shutdown/crash (57P0x), statement cancelled by timeout (57014),
 * lock not available (55P03) and insufficient resources (53xxx).
 */
function isTransientSqlState(code: string): boolean {
  return /^(40|08|53|57P0)/.test(code) || code === "57014" || code === "55P03";
}

/** Integrity violations (23xxx) and data exceptions (22xxx): the same input fails the same way. */
function isPermanentSqlState(code: string): boolean {
  return /^(22|23)/.test(code);
}

export function httpStatusOf(error: Record<string, unknown>): number | undefined {
  const response = error.response as Record<string, unknown> | undefined;
  for (const candidate of [error.status, error.statusCode, error.status_code, response?.status]) {
    if (typeof candidate === "number" && candidate >= 100 && candidate < 600) return candidate;
  }
  return undefined;
}

/**
 * Decides whether a failed attempt may be retried. Walks the `cause` chain, so a wrapped
 * ECONNRESET is still transient. Unknown errors (a bug in a task, say) are transient: they
 * are retried with backoff and end in dead_letters if they never stop, which loses nothing.
 */
export function classifyError(error: unknown): ErrorClass {
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current && typeof current === "object" && !seen.has(current)) {
    seen.add(current);
    if (current instanceof FlowControlError) return "transient";
    if (current instanceof PermanentError || isZodError(current)) return "permanent";
    if (current instanceof TaskTimeoutError || current instanceof TimeoutError) return "transient";
    const record = current as Record<string, unknown>;
    if (record.name === "AbortError" || (typeof record.name === "string" && record.name.endsWith("TimeoutError"))) return "transient";
    if (typeof record.retry_after === "number") return "transient";
    const status = httpStatusOf(record);
    if (status !== undefined) return status === 408 || status === 429 || status >= 500 ? "transient" : "permanent";
    const code = record.code;
    if (typeof code === "string") {
      if (TRANSIENT_NETWORK_CODES.has(code)) return "transient";
      if (/^[0-9A-Z]{5}$/.test(code)) {
        if (isTransientSqlState(code)) return "transient";
        if (isPermanentSqlState(code)) return "permanent";
      }
    }
    current = record.cause;
  }
  return "transient";
}

/**
 * One line for logs and dead letters: the error's name and message, never a stack, and never
 * the credentials of a URL it quotes.
 */
export function describeError(error: unknown): string {
  return redactCredentials(describe(error));
}

function describe(error: unknown): string {
  if (isZodError(error)) {
    const issue = error.issues[0];
    return `invalid payload: ${issue ? `${issue.path.join(".") || "(root)"}: ${issue.message}` : error.message}`;
  }
  if (error instanceof Error) {
    // Wrappers such as slonik's integrity errors keep the specifics (which constraint) in the cause.
    const cause = error.cause instanceof Error && !error.message.includes(error.cause.message) ? ` (${error.cause.message})` : "";
    const line = `${error.name}: ${error.message}${cause}`.replace(/\s+/g, " ").trim();
    return line.length > 2000 ? `${line.slice(0, 2000)}…` : line;
  }
  return String(error).replace(/\s+/g, " ").slice(0, 2000) || "unknown error";
}
