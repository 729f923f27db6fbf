// A long Ollama outage under load (npm run bench:outage): a fleet of workers embeds through
// callService("ollama") at a fleet-wide rate; Ollama then refuses connections for the first half
// of OUTAGE_MS and answers slow 503s for the second half, and comes back. Reports what the issue
// asks of circuit breaking: dead letters (0), attempts used (jobs stay at 1, a few at 2), probes
// (at most one in flight), and how long after Ollama's return every job had applied.
//
//   OUTAGE_MS=600000 OUTAGE_JOBS=2000 OUTAGE_RATE=50 npm run bench:outage
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { sql } from "slonik";
import { z } from "zod";
import { Embedder } from "../pipeline/embedder.ts";
import { createAppPool, createLivenessPool, createQueuePool } from "../src/db/pools.ts";
import { migrate } from "../src/db/migrate.ts";
import { createLogger } from "../src/log.ts";
import { defineTask, type AnyTask } from "../src/runtime/defineTask.ts";
import { Worker } from "../src/worker.ts";
import { FakeOllama } from "../test/servers/ollama.ts";
import { createDatabase, describeMachine, envNumber, sleep, startServer } from "./lib.ts";

const OUTAGE_MS = envNumber("OUTAGE_MS", 600_000);
const JOBS = envNumber("OUTAGE_JOBS", 2_000);
const RATE = envNumber("OUTAGE_RATE", 50);
const WORKERS = envNumber("OUTAGE_WORKERS", 3);
const CONCURRENCY = envNumber("OUTAGE_CONCURRENCY", 10);
const THRESHOLD = envNumber("OUTAGE_BREAKER_THRESHOLD", 5);
const OPEN_MS = envNumber("OUTAGE_BREAKER_OPEN_MS", 5_000);
const MAX_ATTEMPTS = envNumber("OUTAGE_MAX_ATTEMPTS", 5);
const RESULTS = fileURLToPath(new URL("./results/", import.meta.url));

const log = createLogger(process.env.LOG_LEVEL ?? "warn");

function embedTask(embedder: Embedder): AnyTask {
  return defineTask({
    payload: z.object({ n: z.number().int() }),
    async prepare({ payload, callService }) {
      const [vector] = await callService("ollama", (signal) => embedder.embed([`text ${payload.n}`], signal), { cost: 1 });
      return vector!.length;
    },
    async apply({ tx, job, payload }) {
      await tx.query(sql.unsafe`insert into outage_effects (job_id, n) values (${job.id}, ${payload.n})`);
    },
  }) as AnyTask;
}

async function main(): Promise<void> {
  const server = await startServer();
  const machine = await describeMachine(server);
  const database = await createDatabase(server, "outage");
  const admin = createQueuePool(database.url, 2);
  const ollama = new FakeOllama();
  const workers: Array<{ worker: Worker; close(): Promise<void> }> = [];
  try {
    await migrate(admin, log);
    await admin.query("create table outage_effects (job_id bigint not null, n integer not null, applied_at timestamptz not null default clock_timestamp())");
    await ollama.start();
    const embedder = new Embedder({ host: ollama.url, model: "nomic-embed-text", timeoutMs: 5_000, batchSize: 32 });
    for (let i = 0; i < WORKERS; i++) {
      const queuePool = createQueuePool(database.url, 2);
      const appPool = await createAppPool(database.url, 2, { statementTimeoutMs: 30_000 });
      const livenessPool = await createLivenessPool(database.url, { statementTimeoutMs: 30_000 });
      const worker = new Worker({
        queuePool,
        appPool,
        livenessPool,
        log,
        tasks: new Map([["embed_one", embedTask(embedder)]]),
        services: {},
        concurrency: CONCURRENCY,
        taskTimeoutMs: 10_000,
        applyTimeoutMs: 10_000,
        heartbeatIntervalMs: 1_000,
        deadAfterMs: 5_000,
        sweepIntervalMs: 1_000,
        historyRetentionDays: 7,
        shutdownTimeoutMs: 2_000,
        pollIntervalMs: 2_000,
        localQueueSize: 1,
        serviceLimits: { ollama: { rate: RATE } },
        breakerFailureThreshold: THRESHOLD,
        breakerOpenMs: OPEN_MS,
      });
      await worker.start();
      workers.push({ worker, close: async () => { await worker.stop(); await livenessPool.end(); await appPool.end(); await queuePool.end(); } });
    }
    const count = async (query: string) => Number((await admin.query<{ n: string }>(query)).rows[0]!.n);
    const applied = () => count("select count(*) as n from outage_effects");
    await admin.query(
      "select graphile_worker.add_jobs(array(select row('embed_one', json_build_object('n', n), null, null, $2::smallint, null, null, null)::graphile_worker.job_spec from generate_series(1, $1) as n))",
      [JOBS, MAX_ATTEMPTS],
    );
    const started = Date.now();
    while ((await applied()) < JOBS * 0.2) await sleep(200);
    const appliedAtOutage = await applied();
    console.log(`${appliedAtOutage} of ${JOBS} applied; Ollama goes down for ${OUTAGE_MS / 1000} s`);
    await ollama.stop();
    const downAt = Date.now();
    const requestsBefore = ollama.embedRequestTimes.length;
    let inFlightFrom = 0;
    let phase = "refused";
    const samples: Array<{ t: number; state: string; applied: number; phase: string }> = [];
    while (Date.now() < downAt + OUTAGE_MS) {
      if (phase === "refused" && Date.now() >= downAt + OUTAGE_MS / 2) {
        await ollama.start();
        ollama.faults.setRandom({ rate: 1, faults: [{ kind: "status", status: 503, delayMs: 300, message: "overloaded" }] });
        ollama.maxEmbedsInFlight = 0;
        inFlightFrom = ollama.embedRequestTimes.length;
        phase = "503";
      }
      const state = (await admin.query<{ state: string }>("select state from flow_services where name = 'ollama'")).rows[0]!.state;
      samples.push({ t: Math.round((Date.now() - downAt) / 1000), state, applied: await applied(), phase });
      if (samples.length % 6 === 1) console.log(JSON.stringify(samples.at(-1)));
      await sleep(5_000);
    }
    const probesDuring503 = ollama.embedRequestTimes.length - inFlightFrom;
    const maxInFlightDuring503 = ollama.maxEmbedsInFlight;
    const appliedDuringOutage = (await applied()) - appliedAtOutage;
    const requestsDuringOutage = ollama.embedRequestTimes.length - requestsBefore;
    ollama.faults.clear();
    const backAt = Date.now();
    console.log("Ollama is back");
    while ((await applied()) < JOBS && Date.now() < backAt + 600_000) await sleep(250);
    const convergedS = (Date.now() - backAt) / 1000;
    await sleep(1_000);
    const result = {
      when: new Date().toISOString(),
      machine,
      settings: { OUTAGE_MS, JOBS, RATE, WORKERS, CONCURRENCY, THRESHOLD, OPEN_MS, MAX_ATTEMPTS },
      appliedAtOutage,
      appliedDuringOutage,
      applied: await applied(),
      distinctApplied: await count("select count(distinct n) as n from outage_effects"),
      deadLetters: await count("select count(*) as n from dead_letters"),
      jobsLeft: await count("select count(*) as n from graphile_worker.jobs"),
      maxAttempts: await count("select coalesce(max(attempts), 0) as n from job_history"),
      jobsWithMoreThanOneAttempt: await count("select count(*) as n from job_history where attempts > 1"),
      requestsDuringOutage,
      probesDuring503Phase: probesDuring503,
      maxRequestsInFlightDuring503Phase: maxInFlightDuring503,
      convergedSecondsAfterReturn: Math.round(convergedS * 10) / 10,
      totalSeconds: Math.round((Date.now() - started) / 1000),
      throttledSeconds: (await admin.query<{ s: number }>("select throttled_seconds as s from flow_services where name = 'ollama'")).rows[0]!.s,
      samples,
    };
    const { samples: _, machine: __, ...summary } = result;
    console.log(JSON.stringify(summary, null, 2));
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(`${RESULTS}outage.json`, `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    for (const { close } of workers) await close().catch(() => {});
    await ollama.stop();
    await admin.end();
    await database.drop();
    await server.stop();
  }
}

await main();
