// Relay benchmark: throughput (points/s) into the in-repo Qdrant test server, and
// commit-to-visible lag (p50/p99) at a steady 1,000 changes/s.
//   npm run bench:relay            (embedded Postgres; or set DATABASE_URL)
//   BENCH_RELAY_POINTS (20000)  BENCH_RELAY_LAG_SECONDS (10)  BENCH_RELAY_IN_FLIGHT (the relay's default)
//   BENCH_RELAY_BATCH (128, the relay's default: changes per request)
//   BENCH_RELAY_TRANSPORT (rest | grpc: the relay's writes over REST, or over gRPC as with QDRANT_GRPC_URL;
//                          none: discarded before they are encoded: the relay and Postgres without a writer
//                          or a server, no lag figure)
// `npm run bench` runs the same measurement (bench/relayBench.ts) next to the queue peers.
import { mkdirSync, writeFileSync } from "node:fs";
import { describeMachine, envNumber, startServer } from "./lib.ts";
import { benchRelay, type RelayTransport } from "./relayBench.ts";

function relayTransport(): RelayTransport {
  const transport = process.env.BENCH_RELAY_TRANSPORT ?? "rest";
  if (transport !== "rest" && transport !== "grpc" && transport !== "none") {
    throw new Error(`BENCH_RELAY_TRANSPORT must be rest, grpc or none (got ${JSON.stringify(transport)})`);
  }
  return transport;
}

const transport = relayTransport();
const server = await startServer();
try {
  const machine = await describeMachine(server);
  const relay = await benchRelay(server, {
    points: envNumber("BENCH_RELAY_POINTS", 20_000),
    lagRate: 1_000,
    lagSeconds: envNumber("BENCH_RELAY_LAG_SECONDS", 10),
    ...(process.env.BENCH_RELAY_IN_FLIGHT ? { inFlight: envNumber("BENCH_RELAY_IN_FLIGHT", 1) } : {}),
    ...(process.env.BENCH_RELAY_BATCH ? { batchSize: envNumber("BENCH_RELAY_BATCH", 128) } : {}),
    transport,
  });
  console.log(`relay: ${relay.pointsPerSecond} points/s (${relay.throughputPoints} x ${relay.dimensions}-d backlog, batch ${relay.batchSize}, ${relay.inFlight} in flight, over ${relay.transport}, one relay)`);
  const cpu = relay.cpuPerPointUs;
  console.log(`relay CPU per point while draining: relay ${cpu.relay} µs, Qdrant test server ${cpu.qdrantTestServer ?? (transport === "none" ? "none" : "?")} µs, Postgres ${cpu.postgres ?? "? (not on this machine)"} µs`);
  if (transport !== "none") console.log(`relay lag at ${relay.lagRate} changes/s: p50 ${relay.lagP50Ms} ms, p99 ${relay.lagP99Ms} ms, max ${relay.lagMaxMs} ms (${relay.lagSamples} changes)`);
  mkdirSync("bench/results", { recursive: true });
  writeFileSync(`bench/results/relay${transport === "rest" ? "" : `-${transport}`}.json`, `${JSON.stringify({ machine, relay }, null, 2)}\n`);
} finally {
  await server.stop();
}
