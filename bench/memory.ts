// npm run bench:memory: resident memory of a pgconverge worker over a long run of
// transactional one-row jobs. Samples process.memoryUsage() every BENCH_MEMORY_SAMPLE_EVERY
// applied jobs and writes bench/results/memory.json. Settings (environment):
//   BENCH_MEMORY_JOBS (100000)  BENCH_CONCURRENCY (10)  BENCH_MEMORY_SAMPLE_EVERY (5000)
// The worker runs in this process (as `npm run worker` runs it, minus the relay), so the RSS
// is the worker's; Postgres is another process (embedded unless DATABASE_URL is set).
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { runtimeEvents } from "../src/runtime/events.ts";
import { benchPool, createDatabase, describeMachine, envNumber, round, startServer, waitUntil } from "./lib.ts";
import { createPgconverge, enqueuePgconverge, expectNoDeadLetters, type PgconvergeBench } from "./queue.ts";

const jobs = envNumber("BENCH_MEMORY_JOBS", 100_000);
const concurrency = envNumber("BENCH_CONCURRENCY", 10);
const sampleEvery = envNumber("BENCH_MEMORY_SAMPLE_EVERY", 5_000);
/** The first part of the run is warm-up (JIT, pools filling, prepared statements); flatness is judged after it. */
const WARM_UP_FRACTION = 0.1;
/** Growth allowed from the end of warm-up to the end of the run for "flat". */
const FLAT_TOLERANCE = { fraction: 0.1, mb: 16 };
const RESULTS = fileURLToPath(new URL("./results/", import.meta.url));

interface Sample {
  jobs: number;
  seconds: number;
  rssMb: number;
  heapUsedMb: number;
  externalMb: number;
}

const mb = (bytes: number) => round(bytes / 2 ** 20, 1);
const server = await startServer();
try {
  const machine = await describeMachine(server);
  const database = await createDatabase(server, "memory");
  const monitor = benchPool(database.url, 1);
  let bench: PgconvergeBench | null = null;
  try {
    bench = await createPgconverge(database, concurrency);
    process.stderr.write(`bench:memory: enqueueing ${jobs} jobs…\n`);
    await enqueuePgconverge(bench.queuePool, jobs);
    const samples: Sample[] = [];
    const started = performance.now();
    const sample = (done: number) => {
      const usage = process.memoryUsage();
      samples.push({ jobs: done, seconds: round((performance.now() - started) / 1000, 1), rssMb: mb(usage.rss), heapUsedMb: mb(usage.heapUsed), externalMb: mb(usage.external) });
    };
    let applied = 0;
    const onApplied = () => {
      applied++;
      if (applied % sampleEvery === 0) {
        sample(applied);
        const last = samples.at(-1)!;
        process.stderr.write(`bench:memory: ${last.jobs} jobs, ${last.seconds} s, rss ${last.rssMb} MB, heap ${last.heapUsedMb} MB\n`);
      }
    };
    sample(0);
    runtimeEvents.on("job:applied", onApplied);
    await bench.worker.start();
    await waitUntil(
      "the memory run to finish",
      async () => Number((await monitor.query("select count(*) from graphile_worker._private_jobs")).rows[0].count) === 0,
      { timeoutMs: 3_600_000, intervalMs: 200 },
    );
    const seconds = (performance.now() - started) / 1000;
    runtimeEvents.off("job:applied", onApplied);
    await bench.stop();
    bench = null;
    await expectNoDeadLetters(monitor);

    const afterWarmUp = samples.find((s) => s.jobs >= jobs * WARM_UP_FRACTION) ?? samples[0]!;
    const end = samples.at(-1)!;
    const peak = samples.reduce((max, s) => (s.rssMb > max.rssMb ? s : max));
    const growthMb = round(end.rssMb - afterWarmUp.rssMb, 1);
    const flat = growthMb <= Math.max(FLAT_TOLERANCE.mb, afterWarmUp.rssMb * FLAT_TOLERANCE.fraction);
    const result = {
      command: "npm run bench:memory",
      machine,
      jobs,
      concurrency,
      seconds: round(seconds, 1),
      jobsPerSecond: Math.round(jobs / seconds),
      rss: { startMb: samples[0]!.rssMb, afterWarmUpMb: afterWarmUp.rssMb, afterWarmUpJobs: afterWarmUp.jobs, peakMb: peak.rssMb, peakAtJobs: peak.jobs, endMb: end.rssMb },
      growthAfterWarmUpMb: growthMb,
      flat,
      flatCriterion: `RSS at the end exceeds RSS after the first ${WARM_UP_FRACTION * 100}% of jobs by at most max(${FLAT_TOLERANCE.mb} MB, ${FLAT_TOLERANCE.fraction * 100}%)`,
      samples,
    };
    console.log(
      `memory: ${jobs} one-row tx jobs in ${result.seconds} s (${result.jobsPerSecond}/s, concurrency ${concurrency}); ` +
        `RSS start ${result.rss.startMb} MB, after warm-up ${afterWarmUp.rssMb} MB (${afterWarmUp.jobs} jobs), peak ${peak.rssMb} MB (${peak.jobs} jobs), ` +
        `end ${end.rssMb} MB: ${flat ? "flat" : "NOT flat"} (${growthMb >= 0 ? "+" : ""}${growthMb} MB after warm-up)`,
    );
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(`${RESULTS}memory.json`, `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    await bench?.stop().catch(() => {});
    await monitor.end();
    await database.drop();
  }
} finally {
  await server.stop();
}
