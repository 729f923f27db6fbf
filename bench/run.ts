// npm run bench: the queue peers, the relay and the pipeline, side by side on one Postgres
// (embedded unless DATABASE_URL is set; a fresh database per scenario). Prints a table and
// writes bench/results/latest.json. Settings (environment):
//   BENCH_JOBS (20000)  BENCH_CONCURRENCY (10: the peers' job slots)  BENCH_PGBOSS_BATCH (50)
//   BENCH_TUNED_CONCURRENCY (400) BENCH_TUNED_BATCH (128): pgconverge's tuned scenarios, with WORKER_LOCAL_QUEUE_SIZE=500
//   BENCH_ROUNDS (3): rounds of the pair behind tx_vs_gw_noop_localqueue (graphile-worker's no-op with
//   its local queue, pgconverge's applyBatch tuned), run alternately; each side is its middle round
// pgconverge's "defaults" scenarios and its trickle run at the shipped defaults, concurrency
// included (loadConfig's), whatever BENCH_CONCURRENCY says.
//   BENCH_TRICKLE_RATE (200 jobs/s)  BENCH_TRICKLE_SECONDS (10, measured after a second of warm-up; its p99 is the 21st slowest of 2,000 starts)
//   BENCH_RELAY_POINTS (20000)  BENCH_RELAY_LAG_SECONDS (10)  BENCH_DOCS (300)
//   BENCH_SECTIONS (all: queue,latency,relay,pipeline): run only these, e.g. BENCH_SECTIONS=latency;
//   ratios and rows of the sections left out are omitted (and results go to bench/results/sections.json)
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describeMachine, envNumber, round, startServer } from "./lib.ts";
import { benchPipeline } from "./pipeline.ts";
import {
  graphileThroughput,
  graphileTrickle,
  pgBossThroughput,
  pgBossTrickle,
  oneRowBatchTask,
  pgconvergeThroughput,
  pgconvergeTrickle,
  TUNED_CONCURRENCY,
  TUNED_ENV,
  type ThroughputResult,
} from "./queue.ts";
import { benchRelay } from "./relayBench.ts";

const jobs = envNumber("BENCH_JOBS", 20_000);
const concurrency = envNumber("BENCH_CONCURRENCY", 10);
const batchSize = envNumber("BENCH_PGBOSS_BATCH", 50);
const rounds = envNumber("BENCH_ROUNDS", 3);
if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error(`BENCH_ROUNDS must be a positive integer (got ${rounds})`);
const tunedConcurrency = TUNED_CONCURRENCY;
const tunedSettings = Object.entries(TUNED_ENV).map(([name, value]) => `${name}=${value}`).join(" ");
const trickle = { concurrency, rate: envNumber("BENCH_TRICKLE_RATE", 200), seconds: envNumber("BENCH_TRICKLE_SECONDS", 10) };
const RESULTS = fileURLToPath(new URL("./results/", import.meta.url));

const SECTIONS = ["queue", "latency", "relay", "pipeline"] as const;
type Section = (typeof SECTIONS)[number];
const chosen = (process.env.BENCH_SECTIONS ?? SECTIONS.join(",")).split(",").map((name) => name.trim()).filter(Boolean);
for (const name of chosen) if (!SECTIONS.includes(name as Section)) throw new Error(`BENCH_SECTIONS: unknown section "${name}" (known: ${SECTIONS.join(", ")})`);
const runs = (section: Section) => chosen.includes(section);
const everything = SECTIONS.every(runs);
/** Runs `measure` only if its section was chosen. */
async function section<T>(name: Section, measure: () => Promise<T>): Promise<T | undefined> {
  return runs(name) ? measure() : undefined;
}

/** The run of middle throughput (of an even count, the upper of the two middle ones), by the figure given. */
function middleRound(results: readonly ThroughputResult[], figure = (result: ThroughputResult) => result.jobsPerSecond): ThroughputResult {
  return [...results].sort((a, b) => figure(a) - figure(b))[Math.floor(results.length / 2)]!;
}
const warmJobsPerSecond = (result: ThroughputResult) => result.warm.jobsPerSecond;
/** A table cell: jobs/s over the whole window, and over the warm one (of this result, or of `warm` when given). */
const describeThroughput = (result: ThroughputResult, warm = result.warm) => `${result.jobsPerSecond} jobs/s (warm ${warm.jobsPerSecond})`;

const step = (name: string) => process.stderr.write(`bench: ${name}…\n`);
const startedAt = new Date();
const wallStart = performance.now();

const server = await startServer();
try {
  const machine = await describeMachine(server);
  const options = { jobs, concurrency };

  const queue = await section("queue", async () => {
    step(`graphile-worker no-op, defaults (${jobs} jobs)`);
    const gwNoop = await graphileThroughput(server, "noop", options);
    step("graphile-worker, one-row transaction per job");
    const gwTx = await graphileThroughput(server, "tx", options);
    step("pgconverge one-row task, apply: shipped defaults (group commit)");
    const pgconvergeTxDefaults = await pgconvergeThroughput(server, { jobs });
    step("pgconverge one-row task, applyBatch: shipped defaults");
    const pgconvergeBatchDefaults = await pgconvergeThroughput(server, { jobs }, {}, oneRowBatchTask);
    const tuned = { ...options, concurrency: tunedConcurrency };
    step(`pgconverge one-row task, apply: concurrency ${tunedConcurrency}, local queue`);
    const pgconvergeTx = await pgconvergeThroughput(server, tuned, TUNED_ENV);
    // The headline ratio's two sides, alternately: one run of each lasts a second or two, and a
    // hiccup of the machine in either moved the ratio by a tenth.
    const headlineRounds: Array<{ gwNoopLocalQueue: ThroughputResult; pgconvergeBatch: ThroughputResult }> = [];
    for (let n = 1; n <= rounds; n++) {
      step(`round ${n} of ${rounds}: graphile-worker no-op, local queue + batched completion`);
      const gwNoopLocalQueue = await graphileThroughput(server, "noop-localqueue", options);
      step(`round ${n} of ${rounds}: pgconverge one-row task, applyBatch: concurrency ${tunedConcurrency}, local queue`);
      const pgconvergeBatch = await pgconvergeThroughput(server, tuned, TUNED_ENV, oneRowBatchTask);
      headlineRounds.push({ gwNoopLocalQueue, pgconvergeBatch });
    }
    const gwNoopLocalQueue = middleRound(headlineRounds.map((pair) => pair.gwNoopLocalQueue));
    const pgconvergeBatch = middleRound(headlineRounds.map((pair) => pair.pgconvergeBatch));
    const gwNoopLocalQueueWarm = middleRound(headlineRounds.map((pair) => pair.gwNoopLocalQueue), warmJobsPerSecond).warm;
    const pgconvergeBatchWarm = middleRound(headlineRounds.map((pair) => pair.pgconvergeBatch), warmJobsPerSecond).warm;
    step("pg-boss, transactional batch worker, one insert per batch");
    const pgBossTx = await pgBossThroughput(server, "transactional", { ...options, batchSize });
    step("pg-boss, one-row transaction per job");
    const pgBossPerJob = await pgBossThroughput(server, "per-job", { ...options, batchSize });
    return {
      gwNoop, gwNoopLocalQueue, gwTx, pgconvergeTxDefaults, pgconvergeBatchDefaults, pgconvergeTx, pgconvergeBatch, pgBossTx, pgBossPerJob,
      /**
       * The warm figures of the headline pair: each side's middle round by its warm figure,
       * chosen apart from the whole-window middle above (it may be another round).
       */
      gwNoopLocalQueueWarm, pgconvergeBatchWarm,
      /** Each round's jobs/s of the headline pair, and its ratio, from the start and warm; the figures above are the middle rounds. */
      headlineRounds: headlineRounds.map((pair) => ({
        gwNoopLocalQueue: pair.gwNoopLocalQueue.jobsPerSecond,
        pgconvergeBatch: pair.pgconvergeBatch.jobsPerSecond,
        ratio: round(pair.pgconvergeBatch.jobsPerSecond / pair.gwNoopLocalQueue.jobsPerSecond, 2),
        warmRatio: round(pair.pgconvergeBatch.warm.jobsPerSecond / pair.gwNoopLocalQueue.warm.jobsPerSecond, 2),
      })),
    };
  });
  const latency = await section("latency", async () => {
    step(`trickle latency at ${trickle.rate} jobs/s for ${trickle.seconds} s after 1 s of warm-up: graphile-worker`);
    const gwLatency = await graphileTrickle(server, trickle);
    step("trickle latency: pgconverge");
    const pgconvergeLatency = await pgconvergeTrickle(server, trickle);
    step("trickle latency: pg-boss");
    const pgBossLatency = await pgBossTrickle(server, { ...trickle, batchSize });
    return { gw: gwLatency, pgconverge: pgconvergeLatency, pgBoss: pgBossLatency };
  });
  const relay = await section("relay", () => {
    step("relay");
    return benchRelay(server, {
      points: envNumber("BENCH_RELAY_POINTS", 20_000),
      lagRate: 1_000,
      lagSeconds: envNumber("BENCH_RELAY_LAG_SECONDS", 10),
    });
  });
  const pipeline = await section("pipeline", () => {
    step("pipeline");
    return benchPipeline(server, { documents: envNumber("BENCH_DOCS", 300), concurrency });
  });

  const ratio = (a: number, b: number) => round(a / b, 2);
  const q = queue;
  const result = {
    command: everything ? "npm run bench" : `BENCH_SECTIONS=${chosen.join(",")} npm run bench`,
    startedAt: startedAt.toISOString(),
    durationSeconds: round((performance.now() - wallStart) / 1000, 1),
    machine,
    throughput: q,
    latency,
    relay,
    pipeline,
    // tx_*: pgconverge's one-row task at its best (applyBatch, tuned); apply_*: the same row
    // written by a per-job apply, tuned; defaults_*: per-job apply with the shipped defaults.
    // tx_vs_pgboss: against pg-boss's transactional batch worker (its best configuration).
    ratios: {
      ...(q && {
        tx_vs_gw_tx: ratio(q.pgconvergeBatch.jobsPerSecond, q.gwTx.jobsPerSecond),
        tx_vs_gw_noop_localqueue: ratio(q.pgconvergeBatch.jobsPerSecond, q.gwNoopLocalQueue.jobsPerSecond),
        tx_vs_gw_noop_localqueue_warm: ratio(q.pgconvergeBatchWarm.jobsPerSecond, q.gwNoopLocalQueueWarm.jobsPerSecond),
        tx_vs_pgboss: ratio(q.pgconvergeBatch.jobsPerSecond, q.pgBossTx.jobsPerSecond),
        tx_vs_pgboss_warm: ratio(q.pgconvergeBatchWarm.jobsPerSecond, q.pgBossTx.warm.jobsPerSecond),
        tx_vs_pgboss_per_job: ratio(q.pgconvergeBatch.jobsPerSecond, q.pgBossPerJob.jobsPerSecond),
        batch_defaults_vs_pgboss: ratio(q.pgconvergeBatchDefaults.jobsPerSecond, q.pgBossTx.jobsPerSecond),
        apply_vs_gw_tx: ratio(q.pgconvergeTx.jobsPerSecond, q.gwTx.jobsPerSecond),
        apply_vs_gw_noop_localqueue: ratio(q.pgconvergeTx.jobsPerSecond, q.gwNoopLocalQueue.jobsPerSecond),
        defaults_vs_gw_tx: ratio(q.pgconvergeTxDefaults.jobsPerSecond, q.gwTx.jobsPerSecond),
        batch_defaults_vs_gw_tx: ratio(q.pgconvergeBatchDefaults.jobsPerSecond, q.gwTx.jobsPerSecond),
      }),
      ...(latency && { latency_p99_vs_gw: ratio(latency.pgconverge.p99Ms, latency.gw.p99Ms) }),
    } as Record<string, number>,
  };

  const rows: string[][] = [["scenario", "figure", "detail"]];
  if (q) {
    rows.push(
      ["graphile-worker no-op, defaults", describeThroughput(q.gwNoop), `${jobs} jobs, concurrency ${concurrency}, ${q.gwNoop.seconds} s`],
      ["graphile-worker no-op, local queue", describeThroughput(q.gwNoopLocalQueue, q.gwNoopLocalQueueWarm), `localQueue 500, batched completion, ${q.gwNoopLocalQueue.seconds} s, middle of ${rounds} rounds`],
      ["graphile-worker, tx per job (1 row)", describeThroughput(q.gwTx), `${q.gwTx.seconds} s`],
      ["pg-boss 12, transactional batch (1 row/job)", describeThroughput(q.pgBossTx), `localConcurrency ${concurrency} x batchSize ${batchSize}, one insert per batch, ${q.pgBossTx.seconds} s`],
      ["pg-boss 12, tx per job (1 row)", describeThroughput(q.pgBossPerJob), `localConcurrency ${concurrency} x batchSize ${batchSize}, ${q.pgBossPerJob.seconds} s`],
      ["pgconverge 1-row task, apply, shipped defaults", describeThroughput(q.pgconvergeTxDefaults), `concurrency ${q.pgconvergeTxDefaults.concurrency}, ${q.pgconvergeTxDefaults.seconds} s, group commit`],
      ["pgconverge 1-row task, applyBatch, shipped defaults", describeThroughput(q.pgconvergeBatchDefaults), `concurrency ${q.pgconvergeBatchDefaults.concurrency}, ${q.pgconvergeBatchDefaults.seconds} s, one insert per batch`],
      ["pgconverge 1-row task, apply, tuned", describeThroughput(q.pgconvergeTx), `concurrency ${tunedConcurrency}, ${tunedSettings}, ${q.pgconvergeTx.seconds} s`],
      ["pgconverge 1-row task, applyBatch, tuned", describeThroughput(q.pgconvergeBatch, q.pgconvergeBatchWarm), `concurrency ${tunedConcurrency}, ${tunedSettings}, ${q.pgconvergeBatch.seconds} s, middle of ${rounds} rounds`],
    );
  }
  if (latency) {
    const { gw, pgconverge, pgBoss } = latency;
    rows.push(
      ["latency graphile-worker", `p50 ${gw.p50Ms} / p99 ${gw.p99Ms} ms`, `enqueue-to-start, ${gw.rate} jobs/s, max ${gw.maxMs} ms; warm-up p99 ${gw.warmUp.p99Ms} ms`],
      ["latency pgconverge", `p50 ${pgconverge.p50Ms} / p99 ${pgconverge.p99Ms} ms`, `enqueue-to-start, ${pgconverge.rate} jobs/s, max ${pgconverge.maxMs} ms; warm-up p99 ${pgconverge.warmUp.p99Ms} ms`],
      ["latency pg-boss", `p50 ${pgBoss.p50Ms} / p99 ${pgBoss.p99Ms} ms`, `enqueue-to-start, ${pgBoss.rate} jobs/s, LISTEN/NOTIFY; warm-up p99 ${pgBoss.warmUp.p99Ms} ms`],
    );
  }
  if (relay) {
    rows.push(
      ["relay throughput", `${relay.pointsPerSecond} points/s`, `${relay.throughputPoints} x ${relay.dimensions}-d, batch ${relay.batchSize}`],
      ["relay lag", `p50 ${relay.lagP50Ms} / p99 ${relay.lagP99Ms} ms`, `commit-to-visible at ${relay.lagRate} changes/s, max ${relay.lagMaxMs} ms`],
    );
  }
  if (pipeline) rows.push(["pipeline", `${pipeline.documentsPerSecond} docs/s`, `${pipeline.documents} docs, ${pipeline.chunks} chunks, ingest to converged ${pipeline.seconds} s`]);
  const names: Record<string, string> = {
    tx_vs_gw_tx: "pgconverge applyBatch tuned / gw tx",
    tx_vs_gw_noop_localqueue: "pgconverge applyBatch tuned / gw no-op local queue",
    tx_vs_gw_noop_localqueue_warm: "pgconverge applyBatch tuned / gw no-op local queue, warm (after the first tenth of the backlog)",
    tx_vs_pgboss: "pgconverge applyBatch tuned / pg-boss transactional",
    tx_vs_pgboss_warm: "pgconverge applyBatch tuned / pg-boss transactional, warm",
    batch_defaults_vs_pgboss: "pgconverge applyBatch defaults / pg-boss transactional",
    apply_vs_gw_tx: "pgconverge apply tuned / gw tx",
    apply_vs_gw_noop_localqueue: "pgconverge apply tuned / gw no-op local queue",
    defaults_vs_gw_tx: "pgconverge apply defaults / gw tx",
    batch_defaults_vs_gw_tx: "pgconverge applyBatch defaults / gw tx",
    latency_p99_vs_gw: "latency p99 pgconverge / gw",
  };
  for (const [key, name] of Object.entries(names)) {
    if (!(key in result.ratios)) continue;
    rows.push([`ratio ${name}`, String(result.ratios[key]), `ratios.${key}`]);
    if (key === "tx_vs_gw_noop_localqueue" && q) rows.push([`  ${name}, each round`, q.headlineRounds.map((each) => each.ratio).join(", "), "throughput.headlineRounds"]);
    if (key === "tx_vs_gw_noop_localqueue_warm" && q) rows.push([`  ${name}, each round`, q.headlineRounds.map((each) => each.warmRatio).join(", "), "throughput.headlineRounds"]);
  }
  const widths = [0, 1].map((column) => Math.max(...rows.map((row) => row[column]!.length)));
  console.log(
    `pgconverge bench — ${machine.cpus} x ${machine.cpu}, Node ${machine.node}, Postgres ${machine.postgres} (${machine.postgresServer}, fsync ${machine.fsync}, synchronous_commit ${machine.synchronousCommit})`,
  );
  for (const [index, row] of rows.entries()) {
    console.log(`${row[0]!.padEnd(widths[0]!)}  ${row[1]!.padEnd(widths[1]!)}  ${row[2]}`.trimEnd());
    if (index === 0) console.log("-".repeat(widths[0]! + widths[1]! + 40));
  }
  mkdirSync(RESULTS, { recursive: true });
  const file = everything ? "latest.json" : "sections.json";
  writeFileSync(`${RESULTS}${file}`, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote bench/results/${file} (${result.durationSeconds} s)`);
} finally {
  await server.stop();
}
