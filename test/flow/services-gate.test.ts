import t from "tap";
import { Registry } from "prom-client";
import { Embedder } from "../../pipeline/embedder.ts";
import { loadPipelineConfig } from "../../pipeline/config.ts";
import { ConfigError, loadConfig } from "../../src/config.ts";
import { isOutage, parseRetryAfter, ServiceGate, throttledFor } from "../../src/flow/serviceGate.ts";
import { serviceFlowOf } from "../../src/flow/serviceSettings.ts";
import { DatabaseGauges } from "../../src/ops/databaseGauges.ts";
import { readStatus } from "../../src/ops/status.ts";
import { JobDeferredError } from "../../src/runtime/errors.ts";
import { runWorker } from "../../src/api/runWorker.ts";
import { createTestDatabase, testLog, waitFor } from "../helpers/db.ts";
import { spawnWorker, waitForRegistration } from "../helpers/worker.ts";
import { FakeOllama } from "../servers/ollama.ts";

t.test("FLOW_SERVICE_RATES, BREAKER_* and runWorker's flow option: values, and one-line errors for bad ones", async (t) => {
  const config = loadConfig({ FLOW_SERVICE_RATES: "ollama=20, qdrant=50.5", BREAKER_FAILURE_THRESHOLD: "3", BREAKER_OPEN_MS: "1000" });
  t.same(config.FLOW_SERVICE_RATES, { ollama: 20, qdrant: 50.5 });
  t.equal(config.BREAKER_FAILURE_THRESHOLD, 3);
  t.same(loadConfig({}).FLOW_SERVICE_RATES, {}, "none by default");
  t.throws(() => loadConfig({ FLOW_SERVICE_RATES: "ollama" }), new ConfigError('FLOW_SERVICE_RATES: must be NAME=RATE[,NAME=RATE...] with lowercase service names and rates > 0 per second (bad part "ollama") (got "ollama")'));
  t.throws(() => loadConfig({ FLOW_SERVICE_RATES: "ollama=0" }), /FLOW_SERVICE_RATES: must be NAME=RATE/);
  t.throws(() => loadConfig({ BREAKER_FAILURE_THRESHOLD: "0" }), new ConfigError('BREAKER_FAILURE_THRESHOLD: must be at least 1 (got "0")'));
  t.throws(() => loadConfig({ BREAKER_OPEN_MS: "soon" }), /^BREAKER_OPEN_MS: must be a whole number/);
  t.same(serviceFlowOf({ services: { ollama: { rate: 20 } } }), { serviceLimits: { ollama: { rate: 20, burst: 0 } }, breakerFailureThreshold: 5, breakerOpenMs: 30_000 });
  t.throws(() => serviceFlowOf({ services: { ollama: { rate: -1 } } }), new ConfigError("flow.services.ollama.rate: must be a number > 0 per second, or null for none (got -1)"));
  t.throws(() => serviceFlowOf({ services: { Ollama: { rate: 1 } } }), /flow.services: service name "Ollama" must be lowercase/);
  t.throws(() => serviceFlowOf({ breakerOpenMs: 5 }), new ConfigError("flow.breakerOpenMs: must be at least 100 (got 5)"));
  t.equal(loadPipelineConfig({ OLLAMA_RATE_LIMIT: "12.5" }).OLLAMA_RATE_LIMIT, 12.5);
  t.throws(() => loadPipelineConfig({ OLLAMA_RATE_LIMIT: "-1" }), /OLLAMA_RATE_LIMIT: must be 0 \(no limit\) or a positive number/);
});

t.test("what the gate reads from an error: 429 and Retry-After, outages, other answers", async (t) => {
  t.equal(parseRetryAfter("7"), 7_000);
  t.equal(parseRetryAfter(new Date(Date.UTC(2030, 0, 1, 0, 0, 30)).toUTCString(), Date.UTC(2030, 0, 1)), 30_000);
  t.equal(parseRetryAfter("soon"), undefined);
  t.equal(throttledFor({ status: 429 }), 1_000, "a 429 without Retry-After pauses 1 s");
  t.equal(throttledFor({ status: 429, headers: new Headers({ "retry-after": "3" }) }), 3_000);
  t.equal(throttledFor(new Error("wrapped", { cause: { status_code: 429, retry_after: 2 } })), 2_000);
  t.equal(throttledFor({ status: 503 }), undefined);
  t.ok(isOutage({ status: 503 }));
  t.ok(isOutage(new Error("fetch failed", { cause: { code: "ECONNREFUSED" } })));
  t.ok(isOutage(Object.assign(new Error("slow"), { name: "TimeoutError" })));
  t.notOk(isOutage({ status: 400 }), "a 4xx is an answer");
  t.notOk(isOutage(new Error("a bug in the task")));
});

t.test("the pipeline's embedder keeps Ollama's Retry-After, which the official client drops", async (t) => {
  const ollama = new FakeOllama();
  await ollama.start();
  t.teardown(() => ollama.stop());
  ollama.faults.next({ kind: "status", status: 429, retryAfterSeconds: 7, message: "server busy" });
  const embedder = new Embedder({ host: ollama.url, model: "nomic-embed-text", timeoutMs: 5_000, batchSize: 32 });
  const error = await embedder.embed(["a"]).catch((caught: unknown) => caught);
  t.match(String(error), /429.*server busy/);
  t.equal(throttledFor(error), 7_000);
});

t.test("an open circuit defers calls to its reopening without calling; status and /metrics show it", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false, concurrency: 2 });
  const gate = new ServiceGate({ pool: db.appPool, log: testLog, services: { api: { rate: 1_000 } }, failureThreshold: 2, openMs: 60_000 });
  await gate.start();
  const scope = { signal: new AbortController().signal, leaseMs: 10_000 };
  const refused = () => Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
  await t.rejects(gate.call("api", refused, {}, scope), { code: "ECONNREFUSED" }, "a failure below the threshold is the job's failure");
  const opening = await gate.call("api", refused, {}, scope).catch((error: unknown) => error);
  t.ok(opening instanceof JobDeferredError, "the failure that opens the circuit defers its job");
  let called = false;
  const deferred = await gate.call("api", async () => (called = true), {}, scope).catch((error: unknown) => error);
  t.ok(deferred instanceof JobDeferredError && deferred.runAt.getTime() > Date.now() + 50_000, "deferred to the reopening");
  t.notOk(called, "while open nothing is called");

  const status = await readStatus(db.appPool, { deadAfterMs: 15_000 });
  t.match(status.services.api, { rate: 1_000, state: "open", consecutiveFailures: 2, pausedUntil: null, probeInFlight: false });
  t.ok(status.services.api!.throttledSeconds > 100, "both deferrals' waits counted as throttled");

  const registry = new Registry();
  const gauges = new DatabaseGauges({ registry, pool: db.pool, log: testLog, collection: "", deadAfterMs: 15_000 });
  await gauges.refresh();
  const state = (await registry.getSingleMetric("pgconverge_service_state")!.get()).values;
  t.same(state.map((value) => [value.labels.service, value.value]), [["api", 2]], "pgconverge_service_state is 2 (open)");

  // Half-open: the first call after the reopening is the probe, a second one waits for it.
  await db.query("update flow_services set reopen_at = clock_timestamp() where name = 'api'");
  let release!: () => void;
  const probe = gate.call("api", () => new Promise<string>((resolve) => (release = () => resolve("back"))), {}, scope);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const waiting = await gate.call("api", async () => "second", {}, scope).catch((error: unknown) => error);
  t.ok(waiting instanceof JobDeferredError && /probe is in flight/.test(waiting.message), "one probe at a time");
  release();
  t.equal(await probe, "back");
  t.match((await readStatus(db.appPool, { deadAfterMs: 15_000 })).services.api, { state: "closed", consecutiveFailures: 0 });
  t.equal(await gate.call("api", async () => "ok", {}, scope), "ok", "closed: calls go through");
});

t.test("runWorker refuses a bad flow option with one line, before connecting", async (t) => {
  await t.rejects(
    runWorker({ databaseUrl: "postgres://127.0.0.1:9/none", tasks: {}, flow: { services: { ollama: { rate: 0 } } } }),
    new ConfigError("flow.services.ollama.rate: must be a number > 0 per second, or null for none (got 0)"),
  );
});

t.test("pgconverge worker writes the fleet's rates: the config file's (OLLAMA_RATE_LIMIT) and FLOW_SERVICE_RATES", async (t) => {
  const db = await createTestDatabase(t, { concurrency: 2 });
  const worker = spawnWorker(t, db, { OLLAMA_RATE_LIMIT: "5", FLOW_SERVICE_RATES: "qdrant=9" });
  await waitForRegistration(db, worker.child.pid!, 120_000).catch((error: unknown) => {
    throw new Error(`${String(error)}\n${worker.output()}`);
  });
  const rows = await waitFor("the services' rows", async () => {
    const found = await db.query<{ name: string; rate: number }>("select name, rate from flow_services order by name");
    return found.length === 2 && found;
  });
  t.same(rows, [
    { name: "ollama", rate: 5 },
    { name: "qdrant", rate: 9 },
  ]);
});
