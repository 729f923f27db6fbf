import { ConfigError, CoreShape, type Config } from "../config.ts";
import type { ServiceLimit } from "./serviceGate.ts";

/** runWorker's `flow` option, the services part: the environment's FLOW_SERVICE_RATES, BREAKER_* by other names. */
export interface ServiceFlowOptions {
  /**
   * Fleet-wide limits of the services tasks call with `ctx.callService(name, ...)`, by name
   * (FLOW_SERVICE_RATES): `{ ollama: { rate: 20 } }` is 20 requests (or cost units) a second
   * for all workers together. A service not named has no rate limit. Default none.
   */
  services?: Readonly<Record<string, ServiceLimit>>;
  /** Consecutive failures (refused, 5xx, timeouts) that open a service's circuit (BREAKER_FAILURE_THRESHOLD). Default 5. */
  breakerFailureThreshold?: number;
  /** How long an open circuit defers calls before one probe tries the service, ms (BREAKER_OPEN_MS). Default 30 s. */
  breakerOpenMs?: number;
}

/** What the Worker takes: see WorkerConfig.serviceLimits and the breaker settings. */
export interface ServiceFlowSettings {
  serviceLimits: Record<string, ServiceLimit>;
  breakerFailureThreshold: number;
  breakerOpenMs: number;
}

const SERVICE_NAME = /^[a-z][a-z0-9_.-]{0,62}$/;
const Breaker = CoreShape.pick({ BREAKER_FAILURE_THRESHOLD: true, BREAKER_OPEN_MS: true });

/** Validates runWorker's flow options (one-line ConfigError naming the option) and fills in the defaults. */
export function serviceFlowOf(flow: ServiceFlowOptions | undefined): ServiceFlowSettings {
  const serviceLimits: Record<string, ServiceLimit> = {};
  for (const [name, limit] of Object.entries(flow?.services ?? {})) {
    const at = `flow.services.${name}`;
    if (!SERVICE_NAME.test(name)) throw new ConfigError(`flow.services: service name ${JSON.stringify(name)} must be lowercase letters, digits, _ . -, starting with a letter`);
    if (typeof limit !== "object" || limit === null) throw new ConfigError(`${at}: must be an object { rate, burst }`);
    const { rate = null, burst = 0 } = limit;
    if (rate !== null && (typeof rate !== "number" || !Number.isFinite(rate) || rate <= 0)) throw new ConfigError(`${at}.rate: must be a number > 0 per second, or null for none (got ${JSON.stringify(rate)})`);
    if (typeof burst !== "number" || !Number.isFinite(burst) || burst < 0) throw new ConfigError(`${at}.burst: must be a number >= 0 (got ${JSON.stringify(burst)})`);
    serviceLimits[name] = { rate, burst };
  }
  const given = {
    ...(flow?.breakerFailureThreshold === undefined ? {} : { BREAKER_FAILURE_THRESHOLD: flow.breakerFailureThreshold }),
    ...(flow?.breakerOpenMs === undefined ? {} : { BREAKER_OPEN_MS: flow.breakerOpenMs }),
  };
  const parsed = Breaker.safeParse(given);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = issue.path[0] === "BREAKER_OPEN_MS" ? "breakerOpenMs" : "breakerFailureThreshold";
    throw new ConfigError(`flow.${name}: ${issue.message} (got ${JSON.stringify(flow?.[name])})`);
  }
  return { serviceLimits, breakerFailureThreshold: parsed.data.BREAKER_FAILURE_THRESHOLD, breakerOpenMs: parsed.data.BREAKER_OPEN_MS };
}

/**
 * The CLI's flow options: the application's (its config file's `flow.services`) with
 * FLOW_SERVICE_RATES over them, and the BREAKER_* settings.
 */
export function serviceFlowFromConfig(config: Config, app: Readonly<Record<string, ServiceLimit>> = {}): ServiceFlowOptions {
  const services: Record<string, ServiceLimit> = { ...app };
  for (const [name, rate] of Object.entries(config.FLOW_SERVICE_RATES)) services[name] = { ...services[name], rate };
  return { services, breakerFailureThreshold: config.BREAKER_FAILURE_THRESHOLD, breakerOpenMs: config.BREAKER_OPEN_MS };
}
