// What the in-repo Qdrant test server can take on its own: the relay's upserts (the same
// points, payloads and conditional update_filter, over gRPC with the relay's own writer) sent
// from this process as fast as the server answers, the server in a process of its own, so each
// has a core of this machine's two. With `BENCH_RELAY_TRANSPORT=none npm run bench:relay` (the
// relay and Postgres, writes discarded before they are encoded) and this file's own CPU (the
// writer's encoding) it says which part bounds the relay's drain.
//   node --conditions=pgconverge-source --import tsx bench/testServerCeiling.ts
//   BENCH_RELAY_POINTS (40000)  BENCH_RELAY_BATCH (128)  BENCH_RELAY_IN_FLIGHT (4)  BENCH_DIMENSIONS (768)
import { randomUUID } from "node:crypto";
import { createQdrantClient, ensureCollection, olderThan, type PointWrites } from "../src/outbox/qdrant.ts";
import { HASH_KEY, OWNER_KEY, STAMP_KEY } from "../src/outbox/sync.ts";
import { createGrpcPointWrites } from "../src/outbox/qdrantGrpc.ts";
import { envNumber, onCpuNs } from "./lib.ts";
import { startQdrantProcess } from "./qdrantProcess.ts";

const points = envNumber("BENCH_RELAY_POINTS", 40_000);
const batchSize = envNumber("BENCH_RELAY_BATCH", 128);
const inFlight = envNumber("BENCH_RELAY_IN_FLIGHT", 4);
const dimensions = envNumber("BENCH_DIMENSIONS", 768);
const COLLECTION = "bench";
const OWNER = "bench-owner";

const server = await startQdrantProcess();
let writes: PointWrites | null = null;
try {
  const rest = await createQdrantClient({ url: server.url, timeoutMs: 10_000 });
  await ensureCollection(rest, { name: COLLECTION, size: dimensions, distance: "Cosine" });
  writes = await createGrpcPointWrites(server.grpcUrl, { timeoutMs: 10_000 });
  // Vectors made before the clock starts, as the relay gets them from Postgres: arrays of numbers.
  const vectors = Array.from({ length: batchSize }, () => Array.from({ length: dimensions }, () => Math.fround(Math.random())));
  let stamp = 0;
  const batch = () => {
    const group = vectors.map((vector, index) => ({ id: randomUUID(), stamp: ++stamp, vector, index }));
    return {
      wait: true as const,
      ordering: "weak" as const,
      points: group.map((point) => ({
        id: point.id,
        vector: point.vector,
        payload: { document_id: OWNER, chunk_index: point.index, content_sha256: "a".repeat(64), source: "bench", [OWNER_KEY]: OWNER, [HASH_KEY]: "a".repeat(64), [STAMP_KEY]: point.stamp },
      })),
      update_filter: olderThan(OWNER, group),
    };
  };
  const serverAtStart = onCpuNs(server.pid);
  const clientAtStart = process.cpuUsage();
  const started = performance.now();
  let sent = 0;
  const sender = async () => {
    while (sent < points) {
      sent += batchSize;
      await writes!.upsert(COLLECTION, batch());
    }
  };
  await Promise.all(Array.from({ length: inFlight }, sender));
  const seconds = (performance.now() - started) / 1000;
  const serverCpuNs = onCpuNs(server.pid);
  const clientCpu = process.cpuUsage(clientAtStart);
  const result = {
    points: sent,
    batchSize,
    inFlight,
    dimensions,
    pointsPerSecond: Math.round(sent / seconds),
    cpuPerPointUs: {
      testServer: serverCpuNs === null || serverAtStart === null ? null : Math.round((serverCpuNs - serverAtStart) / 1000 / sent),
      client: Math.round((clientCpu.user + clientCpu.system) / sent),
    },
    /** The server's CPU over the window, in cores: near 1 when its one thread is the bound. */
    testServerCores: serverCpuNs === null || serverAtStart === null ? null : Math.round(((serverCpuNs - serverAtStart) / 1e9 / seconds) * 100) / 100,
  };
  console.log(JSON.stringify(result));
} finally {
  writes?.close?.();
  await server.stop();
}
