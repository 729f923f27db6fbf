import t from "tap";
import { sql } from "slonik";
import { z } from "zod";
import { Embedder } from "../../pipeline/embedder.ts";
import { createAppPool, createLivenessPool, createQueuePool } from "../../src/db/pools.ts";
import type { ServiceLimit } from "../../src/flow/serviceGate.ts";
import { defineTask, type AnyTask } from "../../src/runtime/defineTask.ts";
import { Worker } from "../../src/worker.ts";
import { createTestDatabase, testLog, waitFor, type TestDatabase } from "../helpers/db.ts";
import { addJobs, createEffectsTable, effectCounts, queuedJobs } from "../helpers/fixtures.ts";
import { FAST_LIVENESS } from "../helpers/worker.ts";
import { FakeOllama } from "../servers/ollama.ts";

/** A task that embeds one text through callService("ollama") and records its effect. */
function embedTask(embedder: Embedder): AnyTask {
  return defineTask({
    payload: z.object({ n: z.number().int() }),
    async prepare({ payload, callService }) {
      const [vector] = await callService("ollama", (signal) => embedder.embed([`text ${payload.n}`], signal), { cost: 1 });
      return vector!.length;
    },
    async apply({ tx, job, payload }) {
      await tx.query(sql.unsafe`insert into test_effects (job_id, n, attempt, pid) values (${job.id}, ${payload.n}, ${job.attempts}, ${process.pid})`);
    },
  }) as AnyTask;
}

interface FleetOptions {
  workers: number;
  concurrency: number;
  services: Record<string, ServiceLimit>;
  breakerFailureThreshold?: number;
  breakerOpenMs?: number;
  pollIntervalMs?: number;
  taskTimeoutMs?: number;
}

/**
 * In-process workers with pools of their own (as separate processes would have), small so
 * that several test files running at once stay well under the server's max_connections.
 */
async function startFleet(t: { teardown(fn: () => unknown): void }, db: TestDatabase, ollama: FakeOllama, options: FleetOptions): Promise<void> {
  const embedder = new Embedder({ host: ollama.url, model: "nomic-embed-text", timeoutMs: 5_000, batchSize: 32 });
  for (let i = 0; i < options.workers; i++) {
    const queuePool = createQueuePool(db.url, 2);
    const appPool = await createAppPool(db.url, 2, { statementTimeoutMs: 30_000 });
    const livenessPool = await createLivenessPool(db.url, { statementTimeoutMs: 30_000 });
    const worker = new Worker({
      queuePool,
      appPool,
      livenessPool,
      log: testLog,
      tasks: new Map([["embed_one", embedTask(embedder)]]),
      services: {},
      concurrency: options.concurrency,
      taskTimeoutMs: options.taskTimeoutMs ?? 10_000,
      applyTimeoutMs: 10_000,
      heartbeatIntervalMs: Number(FAST_LIVENESS.HEARTBEAT_INTERVAL_MS),
      deadAfterMs: Number(FAST_LIVENESS.WORKER_DEAD_AFTER_MS),
      sweepIntervalMs: Number(FAST_LIVENESS.SWEEP_INTERVAL_MS),
      historyRetentionDays: 7,
      shutdownTimeoutMs: 2_000,
      pollIntervalMs: options.pollIntervalMs ?? Number(FAST_LIVENESS.POLL_INTERVAL_MS),
      localQueueSize: 1,
      serviceLimits: options.services,
      breakerFailureThreshold: options.breakerFailureThreshold ?? 5,
      breakerOpenMs: options.breakerOpenMs ?? 30_000,
    });
    t.teardown(async () => {
      await worker.stop();
      await livenessPool.end();
      await appPool.end();
      await queuePool.end();
    });
    await worker.start();
  }
}

async function outcome(db: TestDatabase) {
  // job_failures rows go when their job completes: the history's attempts are what is left.
  const [row] = await db.query<{ dead: string; retried: string; max_attempts: number | null }>(
    `select (select count(*) from dead_letters) as dead,
            (select count(*) from job_history where attempts > 1) as retried,
            (select max(attempts) from job_history) as max_attempts`,
  );
  return { dead: Number(row!.dead), retried: Number(row!.retried), maxAttempts: row!.max_attempts };
}

/** Attempts used up by failures, over every job: a deferral gives its attempt back. */
async function attemptsFailed(db: TestDatabase): Promise<number> {
  const [row] = await db.query<{ failed: number }>("select coalesce(sum(attempts - 1), 0)::int as failed from job_history");
  return row!.failed;
}

async function serviceRow(db: TestDatabase, name: string) {
  const [row] = await db.query<{ state: string; throttled_seconds: number; paused_until: Date | null }>("select state, throttled_seconds, paused_until from flow_services where name = $1", [name]);
  return row;
}

t.test("a fleet-wide rate limit of 20 requests/s holds within 10% over a 10 s window, measured by the server", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false, concurrency: 2 });
  await createEffectsTable(db);
  const ollama = new FakeOllama();
  await ollama.start();
  t.teardown(() => ollama.stop());
  // The default poll (2 s): deferred jobs are back on time because their worker wakes a slot for them.
  await startFleet(t, db, ollama, { workers: 3, concurrency: 8, services: { ollama: { rate: 20 } }, pollIntervalMs: 2_000 });
  await addJobs(db, "embed_one", Array.from({ length: 330 }, (_, n) => ({ n })));
  await waitFor("the first request", async () => ollama.embedRequestTimes.length > 0, { timeoutMs: 60_000 });
  const start = ollama.embedRequestTimes[0]! + 1_000;
  await waitFor("the 10 s window to pass", async () => Date.now() > start + 10_500, { timeoutMs: 30_000 });
  const inWindow = ollama.embedRequestTimes.filter((at) => at >= start && at < start + 10_000).length;
  if (inWindow < 180 || inWindow > 220) {
    const times = ollama.embedRequestTimes.filter((at) => at >= start && at < start + 10_000);
    t.comment(`gaps over 80 ms between requests: ${times.slice(1).map((at, i) => at - times[i]!).filter((gap) => gap > 80).join(", ")}`);
  }
  t.ok(inWindow >= 180 && inWindow <= 220, `${inWindow} requests in the 10 s window (expected 200 ± 10%)`);
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 60_000 });
  t.same(await effectCounts(db), { rows: 330, distinct: 330 });
  t.same(await outcome(db), { dead: 0, retried: 0, maxAttempts: 1 }, "waiting for a turn used no attempt");
  t.equal(ollama.embedCalls, 330, "one request per job");
});

t.test("a burst of 429s with Retry-After pauses the whole fleet; every job applies once, none dead-lettered", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false, concurrency: 2 });
  await createEffectsTable(db);
  const ollama = new FakeOllama();
  await ollama.start();
  t.teardown(() => ollama.stop());
  ollama.faults.next({ kind: "status", status: 429, retryAfterSeconds: 1, message: "too many requests" }, 30);
  await startFleet(t, db, ollama, { workers: 2, concurrency: 5, services: {} });
  // Two attempts allowed: had each 429 counted as one, most of these jobs would be dead letters.
  await addJobs(db, "embed_one", Array.from({ length: 100 }, (_, n) => ({ n })), { maxAttempts: 2 });
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 60_000 });
  t.same(await effectCounts(db), { rows: 100, distinct: 100 });
  t.same(await outcome(db), { dead: 0, retried: 0, maxAttempts: 1 }, "a 429 is a pause, not a failed attempt");
  t.equal(ollama.embedRequestTimes.length, 130, "each 429 cost one request, no retry storm");
  const first429 = ollama.embedRequestTimes[0]!;
  const duringPause = ollama.embedRequestTimes.filter((at) => at > first429 + 400 && at < first429 + 900).length;
  t.equal(duringPause, 0, "nothing reached the server during the first Retry-After, from any worker");
  t.ok((await serviceRow(db, "ollama"))!.throttled_seconds > 0, "the waiting is counted as throttled time");
});

t.test("Ollama down for 20 s under load: the circuit opens, one probe at a time, no attempts used, nothing dead-lettered, all converge after", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false, concurrency: 2 });
  await createEffectsTable(db);
  const ollama = new FakeOllama();
  await ollama.start();
  t.teardown(() => ollama.stop());
  const threshold = 3;
  await startFleet(t, db, ollama, { workers: 2, concurrency: 8, services: { ollama: { rate: 20 } }, breakerFailureThreshold: threshold, breakerOpenMs: 1_000 });
  // Three attempts allowed: every job waits through the outage, many of them several times.
  await addJobs(db, "embed_one", Array.from({ length: 300 }, (_, n) => ({ n })), { maxAttempts: 3 });
  await waitFor("some jobs to apply", async () => (await effectCounts(db)).rows >= 40, { timeoutMs: 60_000 });
  // Down: every request waits 300 ms, then 503; first refused outright for a while.
  await ollama.stop();
  const downAt = Date.now();
  await waitFor("the circuit to open", async () => (await serviceRow(db, "ollama"))!.state !== "closed", { timeoutMs: 20_000 });
  await ollama.start();
  ollama.faults.setRandom({ rate: 1, faults: [{ kind: "status", status: 503, delayMs: 300, message: "overloaded" }] });
  // Calls let through just before the circuit opened (each slept at most maxSleepMs, 250 ms,
  // for its turn) may still be on their way; only requests sent after them are probes.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const probesSince = Date.now();
  const probesFrom = ollama.embedRequestTimes.length;
  await waitFor("20 s of outage", async () => Date.now() > downAt + 20_000, { timeoutMs: 30_000 });
  const probes = ollama.embedRequestTimes.length - probesFrom;
  const mostAtOnce = ollama.mostInFlightSince(probesSince);
  t.ok(mostAtOnce <= 1, `at most one probe in flight while open (max ${mostAtOnce})`);
  t.ok(probes >= 3 && probes <= 20, `${probes} probes in ~19 s with BREAKER_OPEN_MS 1000 and 300 ms probes`);
  const appliedBeforeReturn = (await effectCounts(db)).rows;
  ollama.faults.clear();
  const backAt = Date.now();
  await waitFor("every job to apply", async () => (await effectCounts(db)).rows === 300, { timeoutMs: 60_000 });
  const convergedMs = Date.now() - backAt;
  t.ok(convergedMs < 30_000, `converged ${convergedMs} ms after Ollama returned (${300 - appliedBeforeReturn} jobs at 20/s)`);
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 20_000 });
  t.same(await effectCounts(db), { rows: 300, distinct: 300 });
  const result = await outcome(db);
  t.equal(result.dead, 0, "no dead letters");
  t.ok(result.retried <= threshold - 1, `${result.retried} jobs used a second attempt: only failures before the circuit opened count (threshold ${threshold})`);
  t.ok((result.maxAttempts ?? 0) <= 2, `job attempts stay low (max ${result.maxAttempts}) though each job waited through the outage`);
  t.equal((await serviceRow(db, "ollama"))!.state, "closed");
});

t.test("Ollama hangs under load: each call times out before prepare's deadline, the circuit opens, no attempt used after it, nothing dead-lettered, all converge after", async (t) => {
  const db = await createTestDatabase(t, { pipeline: false, concurrency: 2 });
  await createEffectsTable(db);
  const ollama = new FakeOllama();
  await ollama.start();
  t.teardown(() => ollama.stop());
  // Every request hangs (far beyond the 3 s prepare deadline) until its client gives up.
  ollama.faults.setRandom({ rate: 1, faults: [{ kind: "delay", ms: 600_000 }] });
  const threshold = 3;
  await startFleet(t, db, ollama, { workers: 2, concurrency: 4, services: {}, breakerFailureThreshold: threshold, breakerOpenMs: 1_000, taskTimeoutMs: 3_000 });
  // Two attempts allowed: before the fix every hung call used one, and jobs were dead-lettered.
  const JOBS = 40;
  await addJobs(db, "embed_one", Array.from({ length: JOBS }, (_, n) => ({ n })), { maxAttempts: 2 });
  // (The service's row is made by its first call.)
  await waitFor("the circuit to open", async () => ["open", "half_open"].includes((await serviceRow(db, "ollama"))?.state ?? "closed"), { timeoutMs: 15_000 });
  // Long enough for failed probes (each a hung call of its own timeout) after the opening.
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  t.equal((await effectCounts(db)).rows, 0, "nothing applied while Ollama hung");
  ollama.faults.clear();
  await waitFor("every job to apply", async () => (await effectCounts(db)).rows === JOBS, { timeoutMs: 30_000 });
  await waitFor("the queue to drain", async () => (await queuedJobs(db)) === 0, { timeoutMs: 20_000 });
  t.same(await effectCounts(db), { rows: JOBS, distinct: JOBS });
  t.equal((await outcome(db)).dead, 0, "no dead letters");
  // Below the threshold a failure is the job's (its attempt used, retried); the one that opens
  // the circuit and every one after it defer their jobs, attempts unused.
  const failed = await attemptsFailed(db);
  t.ok(failed <= threshold - 1, `${failed} attempts used by failures: at most the ${threshold - 1} before the circuit opened`);
  t.equal((await serviceRow(db, "ollama"))!.state, "closed");
});
