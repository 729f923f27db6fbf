// `npm run bench:history`: what the job history costs the one-row transactional task, end to end
// (the worker at the shipped defaults over a backlog, as `npm run bench`'s "defaults" scenario).
// A group commit writes its jobs' history rows inside its first statement (claimBatch), so history
// cannot be switched off; the run without it rewrites that statement, in this process only, to
// return the same rows without inserting them. Runs alternate, with then without, BENCH_ROUNDS
// (2) times each over BENCH_JOBS (20000) jobs; prints each run and the ratio of the medians.
import pg from "pg";
import { envNumber, round, startServer } from "./lib.ts";
import { pgconvergeThroughput } from "./queue.ts";

const jobs = envNumber("BENCH_JOBS", 20_000);
const rounds = envNumber("BENCH_ROUNDS", 2);

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

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

const server = await startServer();
try {
  const runs: Record<"with" | "without", number[]> = { with: [], without: [] };
  for (let round = 1; round <= rounds; round++) {
    for (const variant of ["with", "without"] as const) {
      withoutHistory = variant === "without";
      rewritten = 0;
      const result = await pgconvergeThroughput(server, { jobs });
      if (withoutHistory && rewritten === 0) throw new Error("the claim statement was not rewritten: bench/history.ts no longer matches claimBatch");
      runs[variant].push(result.jobsPerSecond);
      process.stderr.write(`bench:history: round ${round}, ${variant} history: ${result.jobsPerSecond} jobs/s (concurrency ${result.concurrency})\n`);
    }
  }
  const withHistory = median(runs.with);
  const without = median(runs.without);
  console.log(JSON.stringify({ jobs, runs, medianWith: withHistory, medianWithout: without, withOverWithout: round(withHistory / without, 3), historyCostPercent: round((1 - withHistory / without) * 100, 1) }));
} finally {
  await server.stop();
}
