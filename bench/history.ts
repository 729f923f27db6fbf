// `npm run bench:history`: what the job history costs the one-row transactional task, end to end
// (a worker at the shipped defaults over a backlog, as `npm run bench`'s "defaults" scenario).
// A group commit writes its jobs' history rows inside its first statement (claimBatch), so history
// cannot be switched off; without it, that statement is rewritten, in this process only, to
// return the same rows without inserting them. On a shared machine the load drifts more between
// two runs than history costs, so each run switches between with and without every
// BENCH_PHASE_MS (500 ms) and counts the jobs applied in each phase: both variants see the same
// load. BENCH_JOBS (40000) jobs per run, BENCH_ROUNDS (2) runs; prints each run's jobs/s per variant
// and their ratio.
import pg from "pg";
import { runtimeEvents } from "../src/runtime/events.ts";
import { createDatabase, envNumber, round, sleep, startServer } from "./lib.ts";
import { createPgconverge, enqueuePgconverge } from "./queue.ts";

const jobs = envNumber("BENCH_JOBS", 40_000);
const rounds = envNumber("BENCH_ROUNDS", 2);
const phaseMs = envNumber("BENCH_PHASE_MS", 500);

const HISTORY_INSERT = /history as \(\s*insert into job_history[\s\S]*?returning job_id, finished_at\s*\)/;
const NO_HISTORY = "history as (select held.id as job_id, clock_timestamp() as finished_at from held)";

let withoutHistory = false;
let rewritten = 0;
const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  if (withoutHistory && typeof args[0] === "string" && HISTORY_INSERT.test(args[0])) {
    args[0] = args[0].replace(HISTORY_INSERT, NO_HISTORY);
    rewritten += 1;
  }
  return query.apply(this, args);
} as typeof pg.Client.prototype.query;

interface Tally {
  jobs: number;
  ms: number;
}

async function run(): Promise<{ with: Tally; without: Tally }> {
  const server = await startServer();
  const database = await createDatabase(server, "history");
  const tally = { with: { jobs: 0, ms: 0 }, without: { jobs: 0, ms: 0 } };
  let applied = 0;
  const onApplied = () => (applied += 1);
  runtimeEvents.on("job:applied", onApplied);
  try {
    const bench = await createPgconverge(database, undefined);
    try {
      await enqueuePgconverge(bench.queuePool, jobs);
      withoutHistory = false;
      await bench.worker.start();
      // The first and last phases are left out: the start's ramp and the tail's trickle.
      let phase = 0;
      while (applied < jobs * 0.95) {
        const variant = phase % 2 === 0 ? "with" : "without";
        withoutHistory = variant === "without";
        const before = applied;
        const started = performance.now();
        await sleep(phaseMs);
        if (phase > 0) {
          tally[variant].jobs += applied - before;
          tally[variant].ms += performance.now() - started;
        }
        phase += 1;
      }
      withoutHistory = false;
      while (applied < jobs) await sleep(50);
    } finally {
      await bench.stop();
    }
    if (rewritten === 0) throw new Error("the claim statement was never rewritten: bench/history.ts no longer matches claimBatch");
    return tally;
  } finally {
    runtimeEvents.off("job:applied", onApplied);
    await database.drop();
    await server.stop();
  }
}

for (let round_ = 1; round_ <= rounds; round_++) {
  rewritten = 0;
  const tally = await run();
  const rate = (each: Tally) => Math.round((each.jobs / each.ms) * 1000);
  const withRate = rate(tally.with);
  const withoutRate = rate(tally.without);
  console.log(JSON.stringify({ round: round_, jobs, phaseMs, withHistoryJobsPerSecond: withRate, withoutHistoryJobsPerSecond: withoutRate, withOverWithout: round(withRate / withoutRate, 3), historyCostPercent: round((1 - withRate / withoutRate) * 100, 1) }));
}
