import t from "tap";
import { Registry } from "prom-client";
import { Embedder } from "../../pipeline/embedder.ts";
import { loadPipelineConfig } from "../../pipeline/config.ts";
import { ConfigError, loadConfig } from "../../src/config.ts";
import { isOutage, parseRetryAfter, ServiceGate, throttledFor } from "../../src/flow/serviceGate.ts";
import { serviceFlowOf } from "../../src/flow/serviceSettings.ts";
import { Sweeper } from "../../src/liveness/sweeper.ts";
import { DatabaseGauges } from "../../src/ops/databaseGauges.ts";
import { readStatus } from "../../src/ops/status.ts";
import { classifyError, JobDeferredError, TaskTimeoutError } from "../../src/runtime/errors.ts";
import { runWorker } from "../../src/api/runWorker.ts";
import { defineTask, type AnyTask } from "../../src/runtime/defineTask.ts";
import { z } from "zod";
import { createTestDatabase, testLog, waitFor } from "../helpers/db.ts";
import { addJobs } from "../helpers/fixtures.ts";
import { spawnWorker, startWorker, waitForRegistration } from "../helpers/worker.ts";
import { FakeOllama } from "../servers/ollama.ts";

/** The job a gate call is made for, its prepare deadline `timeoutMs` from now. */
function scopeOf(signal: AbortSignal, timeoutMs = 10_000) {
  return { signal, timeoutMs, deadlineAt: performance.now() + timeoutMs, job: { id: "1", lockedBy: "worker-a" } };
}

const refused = () => Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));

/** A call that never answers and ignores its signal (the gate must not wait for it to notice). */
const hangs = () => new Promise<never>(() => {});

/** A call that answers only when its signal fires, with the signal's reason; `started` when it is made. */
function untilAborted() {
  let resolveStarted!: () => void;
  const started = new Promise<void>((resolve) => (resolveStarted = resolve));
  const fn = (signal: AbortSignal) => {
    resolveStarted();
    return new Promise<never>((_, reject) => signal.addEventListener("abort", () => reject(signal.reason), { once: true }));
  };
  return { fn, started };
}

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
  // A fresh prepare deadline for each call, as each job has its own.
  const scope = () => scopeOf(new AbortController().signal);
  await t.rejects(gate.call("api", refused, {}, scope()), { code: "ECONNREFUSED" }, "a failure below the threshold is the job's failure");
  const opening = await gate.call("api", refused, {}, scope()).catch((error: unknown) => error);
  t.ok(opening instanceof JobDeferredError, "the failure that opens the circuit defers its job");
  let called = false;
  const deferred = await gate.call("api", async () => (called = true), {}, scope()).catch((error: unknown) => error);
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
  const probe = gate.call("api", () => new Promise<string>((resolve) => (release = () => resolve("back"))), {}, scope());
  await new Promise((resolve) => setTimeout(resolve, 200));
  const waiting = await gate.call("api", async () => "second", {}, scope()).catch((error: unknown) => error);
  t.ok(waiting instanceof JobDeferredError && /probe is in flight/.test(waiting.message), "one probe at a time");
  release();
  t.equal(await probe, "back");
  t.match((await readStatus(db.appPool, { deadAfterMs: 15_000 })).services.api, { state: "closed", consecutiveFailures: 0 });
  t.equal(await gate.call("api", async () => "ok", {}, scope()), "ok", "closed: calls go through");
});

t.test("a call that gets no answer ends at its own deadline, short of prepare's: a service timeout, and past the threshold a deferral", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false, concurrency: 2 });
  const gate = new ServiceGate({ pool: db.appPool, log: testLog, services: {}, failureThreshold: 2, openMs: 60_000 });
  await gate.start();
  const row = async () => (await db.query<{ state: string; consecutive_failures: number }>("select state, consecutive_failures from flow_services where name = 'api'"))[0];
  let given: AbortSignal | undefined;
  const first = await gate.call("api", (signal) => ((given = signal), hangs()), {}, scopeOf(new AbortController().signal, 1_000)).catch((error: unknown) => error);
  t.match(first, { name: "ServiceTimeoutError", message: /^api: no answer within \d+ ms$/ }, "a one-line error naming the service");
  t.equal(classifyError(first), "transient", "retried like any outage below the threshold");
  t.ok(given?.aborted, "the call's signal fired, so its I/O stops");
  t.match(await row(), { state: "closed", consecutive_failures: 1 }, "counted as the service's failure");
  const second = await gate.call("api", hangs, {}, scopeOf(new AbortController().signal, 1_000)).catch((error: unknown) => error);
  t.ok(second instanceof JobDeferredError, "the timeout that opens the circuit defers its job, attempt unused");
  t.match(await row(), { state: "open", consecutive_failures: 2 });

  // A probe's lease lasts the call's budget and the time to record its outcome: within prepare's deadline.
  await db.query("update flow_services set reopen_at = clock_timestamp() where name = 'api'");
  const probe = gate.call("api", hangs, {}, scopeOf(new AbortController().signal, 1_000)).catch((error: unknown) => error);
  const leaseMs = async () =>
    (await db.query<{ ms: number }>("select extract(epoch from probe_until - state_since)::float8 * 1000 as ms from flow_services where name = 'api' and probe_holder is not null")).at(0)?.ms;
  const lease = await waitFor("the probe's lease", leaseMs);
  t.ok(lease > 0 && lease <= 1_000, `the lease (${Math.round(lease)} ms) ends by prepare's deadline (1000 ms), not after it`);
  t.ok((await probe) instanceof JobDeferredError, "a probe that times out opens the circuit again and defers its job");
  t.match(await row(), { state: "open", consecutive_failures: 3 });
});

t.test("a job with little of its prepare deadline left is deferred by an open circuit or a later turn, not failed; its short call's timeout is not the service's", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false, concurrency: 2 });
  const gate = new ServiceGate({ pool: db.appPool, log: testLog, services: { api: { rate: 4 } }, failureThreshold: 2, openMs: 60_000 });
  await gate.start();
  const row = async () => (await db.query<{ state: string; consecutive_failures: number }>("select state, consecutive_failures from flow_services where name = 'api'"))[0];
  /** A job that spent all but `leftMs` of its 10 s prepare deadline before calling (the reserve kept back is 2 s). */
  const lateScope = (leftMs: number) => ({ ...scopeOf(new AbortController().signal), deadlineAt: performance.now() + leftMs });

  // The rate's next turn is up to 250 ms away, and the call has about 250 ms: sleeping for the
  // turn would leave it no time. It is deferred (or, on a slow machine where the turn has come
  // closer, made after a short sleep), never failed for want of time.
  t.equal(await gate.call("api", async () => "first", {}, scopeOf(new AbortController().signal)), "first");
  const later = await gate.call("api", async () => "second", {}, lateScope(2_250)).catch((error: unknown) => error);
  t.ok((later instanceof JobDeferredError && /rate limit/.test(later.message)) || later === "second", `not failed for a turn it could not use (${String(later)})`);

  // A call given 600 ms (less than the reserve) that times out: the job's lateness, not an outage.
  await db.query("update flow_services set next_free_at = '-infinity', rate = null where name = 'api'");
  const short = await gate.call("api", hangs, {}, lateScope(2_600)).catch((error: unknown) => error);
  t.match(short, { name: "ServiceTimeoutError" }, "the call still ends at its deadline");
  t.match(await row(), { state: "closed", consecutive_failures: 0 }, "not counted against the service");

  // Open: a job nearly out of time is deferred like any other, its attempt unused.
  await db.query("update flow_services set state = 'open', opened_at = now(), reopen_at = now() + interval '1 minute' where name = 'api'");
  const deferred = await gate.call("api", async () => "never", {}, lateScope(50)).catch((error: unknown) => error);
  t.ok(deferred instanceof JobDeferredError && /circuit open/.test(deferred.message), `deferred, not failed (${String(deferred)})`);
});

t.test("a call whose job is aborted (shutdown, prepare's deadline) says nothing about the service: no request if not yet sent, nothing recorded, a probe given up", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false, concurrency: 2 });
  const gate = new ServiceGate({ pool: db.appPool, log: testLog, services: { api: { rate: 1_000 } }, failureThreshold: 3, openMs: 60_000 });
  await gate.start();
  const row = async () =>
    (await db.query<{ state: string; consecutive_failures: number; probe_holder: string | null }>("select state, consecutive_failures, probe_holder from flow_services where name = 'api'"))[0];
  await t.rejects(gate.call("api", refused, {}, scopeOf(new AbortController().signal)), { code: "ECONNREFUSED" });
  let sent = 0;
  const send = async () => ++sent;
  const aborted = (reason: Error) => {
    const controller = new AbortController();
    controller.abort(reason);
    return controller.signal;
  };

  await t.rejects(gate.call("api", send, {}, scopeOf(aborted(new Error("worker shutting down")))), { message: "worker shutting down" }, "aborted before the call: its reason");
  // Aborted while sleeping until its turn (200 ms away): nothing sent either.
  await db.query("update flow_services set next_free_at = clock_timestamp() + interval '200 milliseconds' where name = 'api'");
  const sleeping = new AbortController();
  const asleep = gate.call("api", send, {}, scopeOf(sleeping.signal));
  setTimeout(() => sleeping.abort(new Error("shutdown during the sleep")), 50);
  await t.rejects(asleep, { message: "shutdown during the sleep" });
  t.equal(sent, 0, "no request sent");
  t.match(await row(), { state: "closed", consecutive_failures: 1 }, "nothing recorded");

  // Prepare's deadline firing during a call (it raced the call's own timeout and won): not the service's failure.
  const deadline = new AbortController();
  const inFlight = untilAborted();
  const racing = gate.call("api", inFlight.fn, {}, scopeOf(deadline.signal));
  await inFlight.started;
  deadline.abort(new TaskTimeoutError("prepare exceeded its 10000 ms deadline"));
  await t.rejects(racing, { name: "TaskTimeoutError" });
  t.match(await row(), { state: "closed", consecutive_failures: 1 }, "nothing recorded");

  // Half-open: an aborted job takes no probe lease, and a shutdown during a probe gives it up.
  await db.query("update flow_services set state = 'open', opened_at = clock_timestamp(), reopen_at = clock_timestamp() where name = 'api'");
  await t.rejects(gate.call("api", send, {}, scopeOf(aborted(new Error("worker shutting down")))), { message: "worker shutting down" });
  t.equal(sent, 0, "no probe sent");
  t.match(await row(), { consecutive_failures: 1, probe_holder: null }, "no lease held");
  const shutdown = new AbortController();
  const probing = untilAborted();
  const probe = gate.call("api", probing.fn, {}, scopeOf(shutdown.signal));
  await probing.started;
  t.match(await row(), { state: "half_open", probe_holder: /./ }, "the probe holds the lease");
  shutdown.abort(new Error("worker shutting down"));
  await t.rejects(probe, { message: "worker shutting down" });
  t.match(await row(), { state: "half_open", consecutive_failures: 1, probe_holder: null }, "the lease given up, no failure counted");
  t.equal(await gate.call("api", async () => "back", {}, scopeOf(new AbortController().signal)), "back", "the next call probes at once");
  t.match(await row(), { state: "closed", consecutive_failures: 0 });
});

t.test("the sweep gives up a probe lease whose job its prober no longer holds (its worker died), never a live prober's", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false, concurrency: 2 });
  // Open, due to reopen: the job's call is the probe, and it waits until its job is aborted.
  await db.query("insert into flow_services (name, state, opened_at, reopen_at) values ('api', 'open', clock_timestamp(), clock_timestamp())");
  const probing = untilAborted();
  const task = defineTask({
    payload: z.object({}),
    async prepare({ callService }) {
      await callService("api", probing.fn);
    },
    async apply() {},
  }) as AnyTask;
  // One slot, held by the probing job; the test sweeps, not the worker.
  await startWorker(t, db, { tasks: new Map([["probe_api", task]]), concurrency: 1, sweepIntervalMs: 600_000 });
  await addJobs(db, "probe_api", [{}]);
  await probing.started;
  const [lease] = await db.query<{ probe_job_id: string; probe_locked_by: string; running: boolean }>(
    `select probe_job_id, probe_locked_by,
            exists (select 1 from graphile_worker.jobs where id = probe_job_id and locked_by = probe_locked_by) as running
     from flow_services where name = 'api' and state = 'half_open'`,
  );
  t.ok(lease?.running, "the lease names the job and the lock holder running it");
  const sweeper = new Sweeper({ pool: db.appPool, log: testLog, deadAfterMs: 60_000, intervalMs: 60_000, historyRetentionDays: 7 });
  t.same((await sweeper.sweep()).serviceProbesFreed, [], "a live probe is left alone");
  t.match((await db.query("select probe_holder from flow_services"))[0], { probe_holder: /./ });

  // What the sweep does to a dead worker's jobs: they are no longer locked by it.
  await db.query("select graphile_worker.force_unlock_workers(array[$1])", [lease!.probe_locked_by]);
  t.same((await sweeper.sweep()).serviceProbesFreed, ["api"], "the dead prober's lease is given up");
  t.same(await db.query("select state, probe_holder, probe_until, probe_job_id, probe_locked_by from flow_services"), [
    { state: "half_open", probe_holder: null, probe_until: null, probe_job_id: null, probe_locked_by: null },
  ]);
  const gate = new ServiceGate({ pool: db.appPool, log: testLog, services: {}, failureThreshold: 2, openMs: 60_000 });
  t.equal(await gate.call("api", async () => "back", {}, scopeOf(new AbortController().signal)), "back", "another call probes at once");
  t.match((await db.query("select state from flow_services"))[0], { state: "closed" });
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
