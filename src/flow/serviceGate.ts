import { randomUUID } from "node:crypto";
import pTimeout from "p-timeout";
import { setTimeout as sleep } from "node:timers/promises";
import type { DatabasePool } from "slonik";
import type { Logger } from "../log.ts";
import { describeError, httpStatusOf, JobDeferredError, PermanentError, TaskTimeoutError, TRANSIENT_NETWORK_CODES } from "../runtime/errors.ts";
import { MIN_PARK_MS } from "../runtime/graphileJobs.ts";
import { admit, deferUntil, ensureService, pauseService, recordFailure, recordSuccess, releaseProbe } from "./serviceQueries.ts";

/** A service's limit for the whole fleet. */
export interface ServiceLimit {
  /** Requests (or cost units) per second for the fleet, > 0; null or unset: no rate limit (the 429 pause and the breaker still apply). */
  rate?: number | null;
  /** Cost units that may go at once after a quiet spell, beyond the steady rate. Default 0: every call is spaced by cost/rate. */
  burst?: number;
}

export interface CallServiceOptions {
  /** What the call costs against the rate (e.g. the number of inputs of an embedding request), > 0. Default 1. */
  cost?: number;
}

/** The job a call is made for (built by the executor's runPrepare; not public API). */
export interface CallScope {
  /** The job's signal: prepare's deadline or the worker's shutdown. Either says nothing about the service. */
  signal: AbortSignal;
  /** When prepare's deadline passes, on performance.now()'s clock: each call must end, and record its outcome, before it. */
  deadlineAt: number;
  /** Prepare's whole deadline, ms: the time kept back from a call to record its outcome is a fraction of it. */
  timeoutMs: number;
  /** The job and its lock holder, named by a probe lease: the sweeper gives up a lease whose job its holder no longer holds (a killed prober). */
  job: { id: string; lockedBy: string };
}

/**
 * A call got no answer within its own deadline (the service hangs): an outage, counted by the
 * breaker. Transient (its name ends in TimeoutError): below the threshold the job is retried.
 */
export class ServiceTimeoutError extends Error {
  override name = "ServiceTimeoutError";
}

export interface ServiceGateConfig {
  pool: DatabasePool;
  log: Logger;
  /** Services with a configured limit; others are called without a rate limit. */
  services: Readonly<Record<string, ServiceLimit>>;
  /** Consecutive breaker-worthy failures that open a closed circuit (BREAKER_FAILURE_THRESHOLD). */
  failureThreshold: number;
  /** How long an open circuit defers calls before one probe may try (BREAKER_OPEN_MS). */
  openMs: number;
  /**
   * A call whose turn is at most this far away sleeps until it (its job holds a slot, no
   * connection); a later turn defers the job instead. 250 ms: short enough that a slot is not
   * held long (and that few calls admitted before a circuit opens still go out after it), long
   * enough that a job coming back a poll late still finds a turn.
   */
  maxSleepMs?: number;
  /** Told the run time of every job deferred, so the worker can wake a slot for it then (see DueNudger). */
  onDeferred?: (runAt: Date) => void;
}

const DEFAULT_MAX_SLEEP_MS = 250;
/** A job deferred to a turn comes back this fraction of maxSleepMs before it. */
const RETURN_LEAD = 0.8;
/** How far apart jobs deferred by a service without a rate come back (100 a second). */
const UNLIMITED_SPACING_MS = 10;
/** A job that finds a probe in flight comes back this much later to learn its outcome. */
const PROBE_RECHECK_MS = 1_000;
/**
 * Kept back from a call's deadline, before prepare's, to record the call's outcome and defer the
 * job (recordFailure and deferUntil, two short statements; the park itself runs after prepare):
 * a quarter of prepare's deadline, at most 2 s. A call that times out with nothing kept back
 * would lose the race to prepare's deadline, and its job an attempt, however open the circuit.
 * 2 s is dozens of round trips on a busy pool; a quarter leaves a 3 s prepare 2.25 s to call.
 */
const OUTCOME_RESERVE_MAX_MS = 2_000;
const OUTCOME_RESERVE_FRACTION = 0.25;
/**
 * A call with less time than this left is not made: a timeout that short would be counted
 * against the service for the time its job spent elsewhere.
 */
const MIN_CALL_MS = 100;
/** A 429 without Retry-After pauses the fleet this long. */
const DEFAULT_PAUSE_MS = 1_000;
/** A Retry-After beyond this is taken as this (a misconfigured proxy must not park jobs for days). */
const MAX_PAUSE_MS = 3_600_000;

const SERVICE_NAME = /^[a-z][a-z0-9_.-]{0,62}$/;

/**
 * Fleet-wide flow control of calls to external services (`ctx.callService(name, fn, { cost })`):
 * a rate limit, a pause after a 429, and a circuit breaker, all kept in the service's row of
 * flow_services so every worker process obeys the same ones. A call that may not go now does
 * not fail: its job is deferred (JobDeferredError), parked without a connection or a slot and
 * without using up an attempt, so no job is dead-lettered because a service was slow or down.
 */
export class ServiceGate {
  private readonly ensured = new Map<string, Promise<void>>();
  private readonly maxSleepMs: number;

  private readonly config: ServiceGateConfig;

  constructor(config: ServiceGateConfig) {
    this.config = config;
    this.maxSleepMs = config.maxSleepMs ?? DEFAULT_MAX_SLEEP_MS;
  }

  /** Writes the configured services' limits (the last worker started sets the fleet's). */
  async start(): Promise<void> {
    await Promise.all(Object.keys(this.config.services).map((name) => this.ensure(name)));
  }

  private ensure(name: string): Promise<void> {
    let ensured = this.ensured.get(name);
    if (!ensured) {
      const limit = this.config.services[name];
      ensured = ensureService(this.config.pool, name, limit ? { rate: limit.rate ?? null, burst: limit.burst ?? 0 } : null);
      ensured.catch(() => this.ensured.delete(name));
      this.ensured.set(name, ensured);
    }
    return ensured;
  }

  /**
   * Calls `fn` when the service's limits allow; defers the job (throws JobDeferredError) when they
   * do not yet. `fn` gets a signal that fires when the job's does or when the call's own deadline
   * passes: what is left of prepare's deadline, less the time kept to record the outcome.
   */
  async call<T>(name: string, fn: (signal: AbortSignal) => Promise<T>, options: CallServiceOptions, scope: CallScope): Promise<T> {
    if (!SERVICE_NAME.test(name)) throw new PermanentError(`callService: service name ${JSON.stringify(name)} must be lowercase letters, digits, _ . -, starting with a letter`);
    const cost = options.cost ?? 1;
    if (!Number.isFinite(cost) || cost <= 0) throw new PermanentError(`callService(${name}): cost must be a positive number (got ${String(options.cost)})`);
    const { pool, log } = this.config;
    const reserveMs = Math.floor(Math.min(OUTCOME_RESERVE_MAX_MS, scope.timeoutMs * OUTCOME_RESERVE_FRACTION));
    const callBudgetMs = () => Math.floor(scope.deadlineAt - performance.now() - reserveMs);
    const tooLate = () =>
      new TaskTimeoutError(`callService(${name}): prepare's deadline is too near for the call (${Math.max(callBudgetMs(), 0)} ms left after ${reserveMs} ms kept to record its outcome)`);
    scope.signal.throwIfAborted();
    await this.ensure(name);
    const holder = randomUUID();
    // A probe's lease lasts as long as it may call and then record what it learned, no longer:
    // a prober that is killed keeps the circuit half-open that long at most (the sweeper frees
    // it sooner, once its job is released). A turn is slept for only while the call can still
    // go after it; a later one defers the job (its attempt unused) rather than fail it.
    const admission = await admit(pool, {
      name,
      cost,
      maxSleepMs: Math.max(0, Math.min(this.maxSleepMs, callBudgetMs() - MIN_CALL_MS)),
      holder,
      leaseMs: Math.max(callBudgetMs(), 0) + reserveMs,
      job: scope.job,
    });
    const probe = admission.verdict === "probe";
    const spacingMs = admission.rate === null ? UNLIMITED_SPACING_MS : (1000 * cost) / admission.rate;
    const defer = async (notBefore: Date, reason: string): Promise<never> => {
      // Parked jobs are due MIN_PARK_MS from now at the earliest (parkJob): the nudge is for then.
      const runAt = new Date(Math.max((await deferUntil(pool, name, notBefore, spacingMs)).getTime(), Date.now() + MIN_PARK_MS));
      this.config.onDeferred?.(runAt);
      throw new JobDeferredError(`${name}: ${reason}`, runAt);
    };
    /** Before fn: the job gone or its time up gives the lease back and sends nothing. */
    const notCalled = async (error: unknown): Promise<never> => {
      if (probe) await releaseProbe(pool, name, holder);
      throw error;
    };
    switch (admission.verdict) {
      case "open":
        return defer(admission.reopen_at!, `circuit open until ${admission.reopen_at!.toISOString()}`);
      case "probing":
        // Not until the lease ends: a probe usually answers in far less.
        return defer(new Date(Math.min(admission.probe_until!.getTime(), admission.now.getTime() + PROBE_RECHECK_MS)), "circuit half-open, a probe is in flight");
      case "paused":
        return defer(admission.paused_until!, `paused after a 429 until ${admission.paused_until!.toISOString()}`);
      case "later":
        // Back a little before the turn: a job that arrives then reserves it and sleeps the
        // rest, where one arriving late finds it passed and lost to the whole fleet.
        return defer(new Date(admission.turn.getTime() - this.maxSleepMs * RETURN_LEAD), "rate limit");
      case "go": {
        const waitMs = admission.turn.getTime() - admission.now.getTime();
        if (waitMs > 0) await sleep(waitMs, undefined, { signal: scope.signal }).catch(() => {});
        break;
      }
      case "probe":
        log.info({ service: name }, "circuit half-open: this call probes the service");
        break;
    }
    if (scope.signal.aborted) return notCalled(scope.signal.reason);
    const budgetMs = callBudgetMs();
    if (budgetMs < MIN_CALL_MS) return notCalled(tooLate());

    const timeout = new ServiceTimeoutError(`${name}: no answer within ${budgetMs} ms`);
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(timeout), budgetMs);
    // Per call, on the job's own signal (not the worker's long-lived one): nothing accumulates.
    const signal = AbortSignal.any([scope.signal, deadline.signal]);
    let result: T;
    try {
      // Not waiting for fn to notice its signal: a call that ignores it must not hold the job
      // past its deadline (which would use up an attempt however open the circuit is).
      result = await pTimeout((async () => fn(signal))(), { milliseconds: Number.POSITIVE_INFINITY, signal });
    } catch (error) {
      // The first to fire decides: the call's deadline is the service's silence, the job's
      // signal (shutdown, prepare's deadline winning a race) says nothing about the service.
      const abortedBy = !signal.aborted ? null : signal.reason === timeout ? "call" : "job";
      return this.failed(name, error, { holder, probe, abortedBy, timeout, countsTimeout: budgetMs >= reserveMs, defer });
    } finally {
      clearTimeout(timer);
    }
    if (probe || admission.consecutive_failures > 0) {
      if (await recordSuccess(pool, name, holder)) log.info({ service: name }, "probe succeeded: circuit closed");
    }
    return result;
  }

  private async failed(
    name: string,
    error: unknown,
    call: {
      holder: string;
      probe: boolean;
      abortedBy: "call" | "job" | null;
      timeout: ServiceTimeoutError;
      /** Whether the call had long enough for its timeout to say the service hangs (see call). */
      countsTimeout: boolean;
      defer: (notBefore: Date, reason: string) => Promise<never>;
    },
  ): Promise<never> {
    const { pool, log } = this.config;
    const { holder, probe, abortedBy, timeout, countsTimeout, defer } = call;
    // A call left less time than the reserve (its job spent the rest elsewhere) that times out
    // says more about its job than about the service: a run of them must not open the circuit.
    if (abortedBy === "job" || (abortedBy === "call" && !countsTimeout)) {
      if (probe) await releaseProbe(pool, name, holder);
      throw error;
    }
    // fn rejected with an error of its own after its deadline fired: kept as the cause.
    const failure = abortedBy === "call" && error !== timeout ? new ServiceTimeoutError(timeout.message, { cause: error }) : error;
    const retryAfterMs = throttledFor(failure);
    if (retryAfterMs !== undefined) {
      // Throttled means alive: a probe that gets a 429 closes the circuit.
      await recordSuccess(pool, name, holder);
      const until = await pauseService(pool, name, retryAfterMs);
      log.warn({ service: name, pausedUntil: until.toISOString() }, "service answered 429: fleet paused");
      return defer(until, `answered 429, fleet paused until ${until.toISOString()}`);
    }
    if (isOutage(failure)) {
      const outcome = await recordFailure(pool, name, { holder, error: describeError(failure), threshold: this.config.failureThreshold, openMs: this.config.openMs });
      if (outcome.opened) log.warn({ service: name, reopenAt: outcome.reopen_at?.toISOString(), error: describeError(failure) }, probe ? "probe failed: circuit open again" : "circuit opened");
      // The job that saw the circuit open (or a failure while it is open, or half-open with
      // another call probing) waits for it, its attempt unused; only failures below the
      // threshold count as failed attempts.
      if (outcome.state === "open") return defer(outcome.reopen_at!, `circuit open after: ${describeError(failure)}`);
      if (outcome.state === "half_open") return defer(outcome.probe_until ?? new Date(), `circuit half-open after: ${describeError(failure)}`);
      throw failure;
    }
    // Any other answer (a 4xx, a bad response) shows the service is up.
    if (isHttpAnswer(failure)) await recordSuccess(pool, name, holder);
    else if (probe) await releaseProbe(pool, name, holder);
    throw failure;
  }
}

/** The errors, along the cause chain, as plain records. */
function* chain(error: unknown): Generator<Record<string, unknown>> {
  const seen = new Set<unknown>();
  let current = error;
  while (current && typeof current === "object" && !seen.has(current)) {
    seen.add(current);
    yield current as Record<string, unknown>;
    current = (current as { cause?: unknown }).cause;
  }
}

/** Connection refused or reset, a 5xx, a timeout: the service is (for now) not there. */
export function isOutage(error: unknown): boolean {
  for (const record of chain(error)) {
    const status = httpStatusOf(record);
    if (status !== undefined) return status >= 500;
    if (typeof record.code === "string" && TRANSIENT_NETWORK_CODES.has(record.code)) return true;
    if (typeof record.name === "string" && record.name.endsWith("TimeoutError")) return true;
  }
  return false;
}

function isHttpAnswer(error: unknown): boolean {
  for (const record of chain(error)) if (httpStatusOf(record) !== undefined) return true;
  return false;
}

/**
 * How long the service asked to be left alone, ms, when the error is a 429 (or carries a
 * Retry-After); undefined otherwise. Reads, along the cause chain: retryAfterMs, retry_after
 * (seconds), a Retry-After header (seconds or an HTTP date) on the error or its response.
 */
export function throttledFor(error: unknown): number | undefined {
  let throttled = false;
  for (const record of chain(error)) {
    if (typeof record.retryAfterMs === "number") return clampPause(record.retryAfterMs);
    if (typeof record.retry_after === "number") return clampPause(record.retry_after * 1000);
    const header = headerOf(record.headers) ?? headerOf((record.response as Record<string, unknown> | undefined)?.headers);
    if (header !== undefined) {
      const parsed = parseRetryAfter(header);
      if (parsed !== undefined) return clampPause(parsed);
    }
    if (httpStatusOf(record) === 429) throttled = true;
  }
  return throttled ? DEFAULT_PAUSE_MS : undefined;
}

function headerOf(headers: unknown): string | undefined {
  if (!headers || typeof headers !== "object") return undefined;
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get("retry-after") ?? undefined;
  const value = (headers as Record<string, unknown>)["retry-after"] ?? (headers as Record<string, unknown>)["Retry-After"];
  return typeof value === "string" ? value : undefined;
}

/** Retry-After: delay-seconds or an HTTP date (RFC 9110 10.2.3); ms from now. */
export function parseRetryAfter(value: string, now = Date.now()): number | undefined {
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

function clampPause(ms: number): number {
  return Math.min(Math.max(ms, 0), MAX_PAUSE_MS);
}
