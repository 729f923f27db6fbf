// npm run bench: the queue peers, the relay and the pipeline, side by side on one Postgres
// (embedded unless DATABASE_URL is set; a fresh database per scenario). Prints a table and
// writes bench/results/latest.json. Settings (environment):
//   BENCH_JOBS (20000)  BENCH_CONCURRENCY (10: the peers' job slots)  BENCH_PGBOSS_BATCH (50)
//   BENCH_TUNED_CONCURRENCY (200: pgconverge's tuned scenarios, with WORKER_LOCAL_QUEUE_SIZE=500)
// pgconverge's "defaults" scenarios and its trickle run at the shipped defaults, concurrency
// included (loadConfig's), whatever BENCH_CONCURRENCY says.
//   BENCH_TRICKLE_RATE (200 jobs/s)  BENCH_TRICKLE_SECONDS (5)
//   BENCH_RELAY_POINTS (20000)  BENCH_RELAY_LAG_SECONDS (10)  BENCH_DOCS (300)
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
} from "./queue.ts";
import { benchRelay } from "./relayBench.ts";

const jobs = envNumber("BENCH_JOBS", 20_000);
const concurrency = envNumber("BENCH_CONCURRENCY", 10);
const batchSize = envNumber("BENCH_PGBOSS_BATCH", 50);
const tunedConcurrency = envNumber("BENCH_TUNED_CONCURRENCY", 200);
/** Many job slots (they mostly wait on shared commits) and graphile-worker's local queue. */
const TUNED = { WORKER_LOCAL_QUEUE_SIZE: "500" };
const trickle = { concurrency, rate: envNumber("BENCH_TRICKLE_RATE", 200), seconds: envNumber("BENCH_TRICKLE_SECONDS", 5) };
const RESULTS = fileURLToPath(new URL("./results/", import.meta.url));

const step = (name: string) => process.stderr.write(`bench: ${name}…\n`);
const startedAt = new Date();
const wallStart = performance.now();

const server = await startServer();
try {
  const machine = await describeMachine(server);
  const options = { jobs, concurrency };

  step(`graphile-worker no-op, defaults (${jobs} jobs)`);
  const gwNoop = await graphileThroughput(server, "noop", options);
  step("graphile-worker no-op, local queue + batched completion");
  const gwNoopLocalQueue = await graphileThroughput(server, "noop-localqueue", options);
  step("graphile-worker, one-row transaction per job");
  const gwTx = await graphileThroughput(server, "tx", options);
  step("pgconverge one-row task, apply: shipped defaults (group commit)");
  const pgconvergeTxDefaults = await pgconvergeThroughput(server, { jobs });
  step("pgconverge one-row task, applyBatch: shipped defaults");
  const pgconvergeBatchDefaults = await pgconvergeThroughput(server, { jobs }, {}, oneRowBatchTask);
  const tuned = { ...options, concurrency: tunedConcurrency };
  step(`pgconverge one-row task, apply: concurrency ${tunedConcurrency}, local queue`);
  const pgconvergeTx = await pgconvergeThroughput(server, tuned, TUNED);
  step(`pgconverge one-row task, applyBatch: concurrency ${tunedConcurrency}, local queue`);
  const pgconvergeBatch = await pgconvergeThroughput(server, tuned, TUNED, oneRowBatchTask);
  step("pg-boss, transactional batch worker, one insert per batch");
  const pgBossTx = await pgBossThroughput(server, "transactional", { ...options, batchSize });
  step("pg-boss, one-row transaction per job");
  const pgBossPerJob = await pgBossThroughput(server, "per-job", { ...options, batchSize });

  step(`trickle latency at ${trickle.rate} jobs/s for ${trickle.seconds} s: graphile-worker`);
  const gwLatency = await graphileTrickle(server, trickle);
  step("trickle latency: pgconverge");
  const pgconvergeLatency = await pgconvergeTrickle(server, trickle);
  step("trickle latency: pg-boss");
  const pgBossLatency = await pgBossTrickle(server, { ...trickle, batchSize });

  step("relay");
  const relay = await benchRelay(server, {
    points: envNumber("BENCH_RELAY_POINTS", 20_000),
    lagRate: 1_000,
    lagSeconds: envNumber("BENCH_RELAY_LAG_SECONDS", 10),
  });
  step("pipeline");
  const pipeline = await benchPipeline(server, { documents: envNumber("BENCH_DOCS", 300), concurrency });

  const ratio = (a: number, b: number) => round(a / b, 2);
  const result = {
    command: "npm run bench",
    startedAt: startedAt.toISOString(),
    durationSeconds: round((performance.now() - wallStart) / 1000, 1),
    machine,
    throughput: { gwNoop, gwNoopLocalQueue, gwTx, pgBossTx, pgBossPerJob, pgconvergeTxDefaults, pgconvergeBatchDefaults, pgconvergeTx, pgconvergeBatch },
    latency: { gw: gwLatency, pgconverge: pgconvergeLatency, pgBoss: pgBossLatency },
    relay,
    pipeline,
    // tx_*: pgconverge's one-row task at its best (applyBatch, tuned); apply_*: the same row
    // written by a per-job apply, tuned; defaults_*: per-job apply with the shipped defaults.
    // tx_vs_pgboss: against pg-boss's transactional batch worker (its best configuration).
    ratios: {
      tx_vs_gw_tx: ratio(pgconvergeBatch.jobsPerSecond, gwTx.jobsPerSecond),
      tx_vs_gw_noop_localqueue: ratio(pgconvergeBatch.jobsPerSecond, gwNoopLocalQueue.jobsPerSecond),
      tx_vs_pgboss: ratio(pgconvergeBatch.jobsPerSecond, pgBossTx.jobsPerSecond),
      tx_vs_pgboss_per_job: ratio(pgconvergeBatch.jobsPerSecond, pgBossPerJob.jobsPerSecond),
      batch_defaults_vs_pgboss: ratio(pgconvergeBatchDefaults.jobsPerSecond, pgBossTx.jobsPerSecond),
      apply_vs_gw_tx: ratio(pgconvergeTx.jobsPerSecond, gwTx.jobsPerSecond),
      apply_vs_gw_noop_localqueue: ratio(pgconvergeTx.jobsPerSecond, gwNoopLocalQueue.jobsPerSecond),
      defaults_vs_gw_tx: ratio(pgconvergeTxDefaults.jobsPerSecond, gwTx.jobsPerSecond),
      batch_defaults_vs_gw_tx: ratio(pgconvergeBatchDefaults.jobsPerSecond, gwTx.jobsPerSecond),
      latency_p99_vs_gw: ratio(pgconvergeLatency.p99Ms, gwLatency.p99Ms),
    },
  };

  const rows: string[][] = [
    ["scenario", "figure", "detail"],
    ["graphile-worker no-op, defaults", `${gwNoop.jobsPerSecond} jobs/s`, `${jobs} jobs, concurrency ${concurrency}, ${gwNoop.seconds} s`],
    ["graphile-worker no-op, local queue", `${gwNoopLocalQueue.jobsPerSecond} jobs/s`, `localQueue 500, batched completion, ${gwNoopLocalQueue.seconds} s`],
    ["graphile-worker, tx per job (1 row)", `${gwTx.jobsPerSecond} jobs/s`, `${gwTx.seconds} s`],
    ["pg-boss 12, transactional batch (1 row/job)", `${pgBossTx.jobsPerSecond} jobs/s`, `localConcurrency ${concurrency} x batchSize ${batchSize}, one insert per batch, ${pgBossTx.seconds} s`],
    ["pg-boss 12, tx per job (1 row)", `${pgBossPerJob.jobsPerSecond} jobs/s`, `localConcurrency ${concurrency} x batchSize ${batchSize}, ${pgBossPerJob.seconds} s`],
    ["pgconverge 1-row task, apply, shipped defaults", `${pgconvergeTxDefaults.jobsPerSecond} jobs/s`, `concurrency ${pgconvergeTxDefaults.concurrency}, ${pgconvergeTxDefaults.seconds} s, group commit`],
    ["pgconverge 1-row task, applyBatch, shipped defaults", `${pgconvergeBatchDefaults.jobsPerSecond} jobs/s`, `concurrency ${pgconvergeBatchDefaults.concurrency}, ${pgconvergeBatchDefaults.seconds} s, one insert per batch`],
    ["pgconverge 1-row task, apply, tuned", `${pgconvergeTx.jobsPerSecond} jobs/s`, `concurrency ${tunedConcurrency}, WORKER_LOCAL_QUEUE_SIZE=500, ${pgconvergeTx.seconds} s`],
    ["pgconverge 1-row task, applyBatch, tuned", `${pgconvergeBatch.jobsPerSecond} jobs/s`, `concurrency ${tunedConcurrency}, WORKER_LOCAL_QUEUE_SIZE=500, ${pgconvergeBatch.seconds} s`],
    ["latency graphile-worker", `p50 ${gwLatency.p50Ms} / p99 ${gwLatency.p99Ms} ms`, `enqueue-to-start, ${gwLatency.rate} jobs/s, max ${gwLatency.maxMs} ms`],
    ["latency pgconverge", `p50 ${pgconvergeLatency.p50Ms} / p99 ${pgconvergeLatency.p99Ms} ms`, `enqueue-to-start, ${pgconvergeLatency.rate} jobs/s, max ${pgconvergeLatency.maxMs} ms`],
    ["latency pg-boss", `p50 ${pgBossLatency.p50Ms} / p99 ${pgBossLatency.p99Ms} ms`, `enqueue-to-start, ${pgBossLatency.rate} jobs/s, LISTEN/NOTIFY`],
    ["relay throughput", `${relay.pointsPerSecond} points/s`, `${relay.throughputPoints} x ${relay.dimensions}-d, batch ${relay.batchSize}`],
    ["relay lag", `p50 ${relay.lagP50Ms} / p99 ${relay.lagP99Ms} ms`, `commit-to-visible at ${relay.lagRate} changes/s, max ${relay.lagMaxMs} ms`],
    ["pipeline", `${pipeline.documentsPerSecond} docs/s`, `${pipeline.documents} docs, ${pipeline.chunks} chunks, ingest to converged ${pipeline.seconds} s`],
    ["ratio pgconverge applyBatch tuned / gw tx", String(result.ratios.tx_vs_gw_tx), "ratios.tx_vs_gw_tx"],
    ["ratio pgconverge applyBatch tuned / gw no-op local queue", String(result.ratios.tx_vs_gw_noop_localqueue), "ratios.tx_vs_gw_noop_localqueue"],
    ["ratio pgconverge applyBatch tuned / pg-boss transactional", String(result.ratios.tx_vs_pgboss), "ratios.tx_vs_pgboss"],
    ["ratio pgconverge applyBatch defaults / pg-boss transactional", String(result.ratios.batch_defaults_vs_pgboss), "ratios.batch_defaults_vs_pgboss"],
    ["ratio pgconverge apply tuned / gw tx", String(result.ratios.apply_vs_gw_tx), "ratios.apply_vs_gw_tx"],
    ["ratio pgconverge apply tuned / gw no-op local queue", String(result.ratios.apply_vs_gw_noop_localqueue), "ratios.apply_vs_gw_noop_localqueue"],
    ["ratio pgconverge apply defaults / gw tx", String(result.ratios.defaults_vs_gw_tx), "ratios.defaults_vs_gw_tx"],
    ["ratio pgconverge applyBatch defaults / gw tx", String(result.ratios.batch_defaults_vs_gw_tx), "ratios.batch_defaults_vs_gw_tx"],
    ["ratio latency p99 pgconverge / gw", String(result.ratios.latency_p99_vs_gw), "ratios.latency_p99_vs_gw"],
  ];
  const widths = [0, 1].map((column) => Math.max(...rows.map((row) => row[column]!.length)));
  console.log(
    `pgconverge bench — ${machine.cpus} x ${machine.cpu}, Node ${machine.node}, Postgres ${machine.postgres} (${machine.postgresServer}, fsync ${machine.fsync}, synchronous_commit ${machine.synchronousCommit})`,
  );
  for (const [index, row] of rows.entries()) {
    console.log(`${row[0]!.padEnd(widths[0]!)}  ${row[1]!.padEnd(widths[1]!)}  ${row[2]}`.trimEnd());
    if (index === 0) console.log("-".repeat(widths[0]! + widths[1]! + 40));
  }
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(`${RESULTS}latest.json`, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote bench/results/latest.json (${result.durationSeconds} s)`);
} finally {
  await server.stop();
}
