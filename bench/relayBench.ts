// The relay benchmark as a function, shared by `npm run bench:relay` and `npm run bench`:
// throughput (points/s) into the in-repo Qdrant test server, and commit-to-visible lag
// (p50/p99) at a steady rate of changes.
import { randomUUID } from "node:crypto";
import { sql } from "slonik";
import { migrate } from "../src/db/migrate.ts";
import { createAppPool, createQueuePool } from "../src/db/pools.ts";
import { createLogger } from "../src/log.ts";
import { enqueuePointChanges } from "../src/outbox/outbox.ts";
import { createQdrantClient, restPointWrites } from "../src/outbox/qdrant.ts";
import { createGrpcPointWrites } from "../src/outbox/qdrantGrpc.ts";
import { PIPELINE_MIGRATIONS } from "../test/helpers/db.ts";
import { Relay } from "../src/outbox/relay.ts";
import { chunkSync } from "../pipeline/chunkSync.ts";
import { startQdrantProcess, type QdrantProcess } from "./qdrantProcess.ts";
import { createDatabase, onCpuNs, percentile, sleep, type BenchServer } from "./lib.ts";

export interface RelayBenchOptions {
  /** Size of the backlog drained for the throughput figure. */
  points: number;
  /** Changes per second committed for the lag figure. */
  lagRate: number;
  lagSeconds: number;
  dimensions?: number;
  batchSize?: number;
  /** Batches the relay writes at once (the relay's default unless set). */
  inFlight?: number;
  /**
   * How the relay writes points: REST (the default) or gRPC (QDRANT_GRPC_URL); or "none": the
   * writes are discarded before they are encoded, to measure the relay's claim, load and
   * acknowledgement and Postgres without a writer or a server (no lag figure).
   */
  transport?: RelayTransport;
}

export type RelayTransport = "rest" | "grpc" | "none";

/** Point writes that go nowhere, not even encoded: what the relay and Postgres can do without a writer or a server. */
const discardedWrites = { upsert: async () => {}, delete: async () => {} };

export interface RelayBenchResult {
  dimensions: number;
  batchSize: number;
  inFlight: number | "default";
  transport: RelayTransport;
  throughputPoints: number;
  pointsPerSecond: number;
  lagRate: number;
  lagP50Ms: number;
  lagP99Ms: number;
  lagMaxMs: number;
  lagSamples: number;
  /**
   * CPU time per point while the backlog drained, µs: the relay's process (user + system), the
   * Qdrant test server's, and the Postgres backends serving the bench database (null unless
   * Postgres runs on this machine).
   */
  cpuPerPointUs: { relay: number; qdrantTestServer: number | null; postgres: number | null };
}

const COLLECTION = "bench";

export async function benchRelay(server: BenchServer, options: RelayBenchOptions): Promise<RelayBenchResult> {
  const dimensions = options.dimensions ?? 768;
  const batchSize = options.batchSize ?? 128;
  const log = createLogger("silent");
  const database = await createDatabase(server, "relay");
  const queuePool = createQueuePool(database.url, 2);
  let fake: QdrantProcess | null = null;
  let pool: Awaited<ReturnType<typeof createAppPool>> | null = null;
  let relay: Relay | null = null;
  try {
    await migrate(queuePool, log, { app: PIPELINE_MIGRATIONS });
    pool = await createAppPool(database.url, 8, { statementTimeoutMs: 60_000 });
    const app = pool;
    fake = await startQdrantProcess();
    const qdrant = await createQdrantClient({ url: fake.url, timeoutMs: 10_000 });
    const transport = options.transport ?? "rest";
    const points =
      transport === "grpc" ? await createGrpcPointWrites(fake.grpcUrl, { timeoutMs: 10_000 }) : transport === "none" ? discardedWrites : restPointWrites(qdrant);
    const [{ id: documentId }] = (await queuePool.query(
      "insert into documents (source, content, content_sha256) values ('bench', 'bench', repeat('0', 64)) returning id",
    )).rows as [{ id: string }];
    relay = new Relay({
      pool: app, listenUrl: database.url, qdrant, points, syncs: [chunkSync({ collection: COLLECTION, dimensions })], log,
      batchSize, pollIntervalMs: 5_000, leaseMs: 60_000, maxBackoffMs: 1_000, inFlight: options.inFlight,
    });
    await relay.prepareCollections();

    /** Inserts embedded chunks and their outbox changes in one transaction; returns their ids. */
    const writeChunks = async (count: number, firstIndex: number): Promise<string[]> => {
      const ids = Array.from({ length: count }, () => randomUUID());
      await app.transaction(async (tx) => {
        await tx.query(sql.unsafe`
          insert into chunks (id, document_id, chunk_index, content, content_sha256, embedding, embedding_model, embedded_at)
          select id, ${documentId}, ${firstIndex} + ordinality - 1, 'chunk ' || id, repeat('a', 64),
                 array(select random()::real from generate_series(1, ${dimensions})), 'bench', now()
          from unnest(${sql.array(ids, "uuid")}) with ordinality as t(id, ordinality)
        `);
        await enqueuePointChanges(tx, COLLECTION, ids);
      });
      return ids;
    };
    const pending = async () => Number((await queuePool.query("select count(*) from outbox")).rows[0].count);
    // Counted from the relay's batch reports, not polled: a count every 20 ms scanned the whole
    // outbox, CPU taken from the relay on a small machine.
    let synced = 0;
    let onSynced: (() => void) | null = null;
    relay.on("batch", (report) => {
      synced += report.synced;
      onSynced?.();
    });
    const drained = async (changes: number) => {
      const deadline = Date.now() + 600_000;
      while (synced < changes) {
        if (Date.now() > deadline) throw new Error(`the relay synced ${synced} of ${changes} changes in 10 minutes`);
        await new Promise<void>((resolve) => {
          onSynced = resolve;
          setTimeout(resolve, 1_000);
        });
      }
      const left = await pending();
      if (left > 0) throw new Error(`${left} outbox changes left after ${synced} were synced`);
    };

    // 1. Throughput: a backlog drained by one relay.
    for (let written = 0; written < options.points; written += 1000) await writeChunks(Math.min(1000, options.points - written), written);
    // Backend process ids are this machine's only when the server is (embedded, or on loopback;
    // not a container's published port).
    const postgresHere = server.embedded || ["127.0.0.1", "localhost", "[::1]"].includes(new URL(server.adminUrl).hostname);
    const backends = async () =>
      postgresHere ? (await queuePool.query<{ pid: number }>("select pid from pg_stat_activity where datname = current_database()")).rows.map((row) => row.pid) : [];
    const postgresAtStart = new Map((await backends()).map((pid) => [pid, onCpuNs(pid)]));
    const serverAtStart = onCpuNs(fake.pid);
    const relayAtStart = process.cpuUsage();
    let started = performance.now();
    await relay.start();
    await drained(options.points);
    const drainSeconds = (performance.now() - started) / 1000;
    const relayCpu = process.cpuUsage(relayAtStart);
    const serverCpuNs = onCpuNs(fake.pid);
    // A backend that started during the drain counts whole.
    const postgresNs = (await backends()).map((pid) => {
      const now = onCpuNs(pid);
      const before = postgresAtStart.has(pid) ? postgresAtStart.get(pid) : 0;
      return now === null || before === null || before === undefined ? null : now - before;
    });
    const perPoint = (ns: number) => Math.round(ns / 1000 / options.points);
    const cpuPerPointUs = {
      relay: Math.round((relayCpu.user + relayCpu.system) / options.points),
      // No server was written to when the writes were discarded.
      qdrantTestServer: transport === "none" || serverCpuNs === null || serverAtStart === null ? null : perPoint(serverCpuNs - serverAtStart),
      postgres: postgresNs.length === 0 || postgresNs.includes(null) ? null : perPoint(postgresNs.reduce<number>((sum, ns) => sum + ns!, 0)),
    };

    // 2. Lag at a steady rate: a batch every 10 ms, commit time to visible in the test server.
    const lagSeconds = transport === "none" ? 0 : options.lagSeconds;
    const perTick = Math.max(1, Math.round(options.lagRate / 100));
    const committedAt = new Map<string, number>();
    started = performance.now();
    let index = options.points;
    for (let tick = 0; tick < lagSeconds * 100; tick++) {
      const ids = await writeChunks(perTick, index);
      const now = Date.now();
      for (const id of ids) committedAt.set(id, now);
      index += ids.length;
      const wait = started + (tick + 1) * 10 - performance.now();
      if (wait > 0) await sleep(wait);
    }
    const achievedRate = committedAt.size / ((performance.now() - started) / 1000);
    await drained(options.points + committedAt.size);
    const lags = [...(await fake.writtenAt(COLLECTION))]
      .filter(([id]) => committedAt.has(id))
      .map(([id, writtenAt]) => writtenAt - committedAt.get(id)!)
      .sort((a, b) => a - b);
    return {
      dimensions,
      batchSize,
      inFlight: options.inFlight ?? "default",
      transport: options.transport ?? "rest",
      throughputPoints: options.points,
      pointsPerSecond: Math.round(options.points / drainSeconds),
      lagRate: Math.round(achievedRate),
      lagP50Ms: percentile(lags, 50),
      lagP99Ms: percentile(lags, 99),
      lagMaxMs: lags.at(-1) ?? Number.NaN,
      lagSamples: lags.length,
      cpuPerPointUs,
    };
  } finally {
    await relay?.stop();
    await fake?.stop();
    await pool?.end();
    await queuePool.end();
    await database.drop();
  }
}
