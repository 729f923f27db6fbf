// Enqueue-to-start latency at a trickle, for looking into it: graphile-worker and pgconverge
// variants alternating in one process, several rounds, with the process's event-loop delay and
// utilisation over each run (the producer runs in the same process for every peer).
//   node --conditions=pgconverge-source --import tsx bench/latency.ts
//   LATENCY_VARIANTS (gw,default,lq1)  LATENCY_ROUNDS (3)  BENCH_TRICKLE_RATE (200)  BENCH_TRICKLE_SECONDS (8, after a second of warm-up)
// Variants: gw = graphile-worker run() defaults, concurrency 10; default = pgconverge at the
// shipped defaults; lq1 = the same with WORKER_LOCAL_QUEUE_SIZE=1 (no local queue).
import { loadavg } from "node:os";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { envNumber, startServer } from "./lib.ts";
import { graphileTrickle, pgconvergeTrickle } from "./queue.ts";

const VARIANTS: Record<string, Record<string, string> | "gw"> = { gw: "gw", default: {}, lq1: { WORKER_LOCAL_QUEUE_SIZE: "1" } };
const chosen = (process.env.LATENCY_VARIANTS ?? "gw,default,lq1").split(",");
for (const name of chosen) if (!(name in VARIANTS)) throw new Error(`LATENCY_VARIANTS: unknown variant "${name}" (known: ${Object.keys(VARIANTS).join(", ")})`);
const trickle = { concurrency: 10, rate: envNumber("BENCH_TRICKLE_RATE", 200), seconds: envNumber("BENCH_TRICKLE_SECONDS", 8) };

const server = await startServer();
try {
  for (let round = 1; round <= envNumber("LATENCY_ROUNDS", 3); round++) {
    for (const name of chosen) {
      const variant = VARIANTS[name]!;
      const delay = monitorEventLoopDelay({ resolution: 5 });
      delay.enable();
      const before = performance.eventLoopUtilization();
      const result = variant === "gw" ? await graphileTrickle(server, trickle) : await pgconvergeTrickle(server, trickle, variant);
      delay.disable();
      const utilisation = performance.eventLoopUtilization(before).utilization;
      const ms = (ns: number) => (ns / 1e6).toFixed(1);
      console.log(
        `round ${round} ${name.padEnd(8)} start p50 ${result.p50Ms} / p99 ${result.p99Ms} / max ${result.maxMs} ms at ${result.rate} jobs/s (warm-up p99 ${result.warmUp.p99Ms} ms); ` +
          `event loop delay p99 ${ms(delay.percentile(99))} max ${ms(delay.max)} ms, utilisation ${utilisation.toFixed(2)}; load ${loadavg()[0]!.toFixed(1)}`,
      );
    }
  }
} finally {
  await server.stop();
}
