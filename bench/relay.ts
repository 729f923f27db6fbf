// Relay benchmark: throughput (points/s) into the in-repo Qdrant test server, and
// commit-to-visible lag (p50/p99) at a steady 1,000 changes/s.
//   npm run bench:relay            (embedded Postgres; or set DATABASE_URL)
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { sql } from "slonik";
import { startEmbeddedPostgres } from "../src/db/embedded.ts";
import { migrate } from "../src/db/migrate.ts";
import { createAppPool, createQueuePool } from "../src/db/pools.ts";
import { createLogger } from "../src/log.ts";
import { loadChunkPoints } from "../src/outbox/chunkPoints.ts";
import { enqueuePointChanges } from "../src/outbox/outbox.ts";
import { createQdrantClient } from "../src/outbox/qdrant.ts";
import { Relay } from "../src/outbox/relay.ts";
import { FakeQdrant } from "../test/servers/qdrant.ts";

const DIMENSIONS = 768;
const THROUGHPUT_POINTS = Number(process.env.BENCH_RELAY_POINTS ?? 20_000);
const LAG_RATE = 1_000;
const LAG_SECONDS = Number(process.env.BENCH_RELAY_LAG_SECONDS ?? 10);
const COLLECTION = "bench";
const log = createLogger("silent");

const dataDir = process.env.DATABASE_URL ? null : mkdtempSync(join(tmpdir(), "pgconverge-bench-"));
const server = dataDir ? await startEmbeddedPostgres({ dataDir, persistent: false }) : null;
const adminUrl = process.env.DATABASE_URL ?? server!.url;
const dbName = `pgc_bench_${Date.now()}`;
const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query(`create database ${dbName}`);
const url = new URL(adminUrl);
url.pathname = `/${dbName}`;
const queuePool = createQueuePool(url.toString(), 2);
await migrate(queuePool, log);
const pool = await createAppPool(url.toString(), 8, { statementTimeoutMs: 60_000 });
const fake = new FakeQdrant();
await fake.start();
const qdrant = createQdrantClient({ url: fake.url, timeoutMs: 10_000 });
const [{ id: documentId }] = (await queuePool.query(
  "insert into documents (source, content, content_sha256) values ('bench', 'bench', repeat('0', 64)) returning id",
)).rows as [{ id: string }];
const relay = new Relay({
  pool, databaseUrl: url.toString(), qdrant, collection: COLLECTION, dimensions: DIMENSIONS, loadPoints: loadChunkPoints, log,
  batchSize: 128, pollIntervalMs: 5_000, leaseMs: 60_000, maxBackoffMs: 1_000,
});
await relay.prepareCollection();

/** Inserts embedded chunks and their outbox changes in one transaction; returns their ids. */
async function writeChunks(count: number, firstIndex: number): Promise<string[]> {
  const ids = Array.from({ length: count }, () => randomUUID());
  await pool.transaction(async (tx) => {
    await tx.query(sql.unsafe`
      insert into chunks (id, document_id, chunk_index, content, content_sha256, embedding, embedding_model, embedded_at)
      select id, ${documentId}, ${firstIndex} + ordinality - 1, 'chunk ' || id, repeat('a', 64),
             array(select random()::real from generate_series(1, ${DIMENSIONS})), 'bench', now()
      from unnest(${sql.array(ids, "uuid")}) with ordinality as t(id, ordinality)
    `);
    await enqueuePointChanges(tx, COLLECTION, ids);
  });
  return ids;
}

const pending = async () => Number((await queuePool.query("select count(*) from outbox")).rows[0].count);

// 1. Throughput: a backlog drained by one relay.
for (let written = 0; written < THROUGHPUT_POINTS; written += 1000) await writeChunks(1000, written);
let started = performance.now();
await relay.start();
while ((await pending()) > 0) await new Promise((resolve) => setTimeout(resolve, 20));
const drainSeconds = (performance.now() - started) / 1000;
const throughput = THROUGHPUT_POINTS / drainSeconds;

// 2. Lag at a steady rate: 10 changes every 10 ms, commit time to visible in the test server.
const committedAt = new Map<string, number>();
started = performance.now();
let index = THROUGHPUT_POINTS;
for (let tick = 0; tick < LAG_SECONDS * 100; tick++) {
  const ids = await writeChunks(LAG_RATE / 100, index);
  const now = Date.now();
  for (const id of ids) committedAt.set(id, now);
  index += ids.length;
  const due = started + (tick + 1) * 10;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}
const achievedRate = committedAt.size / ((performance.now() - started) / 1000);
while ((await pending()) > 0) await new Promise((resolve) => setTimeout(resolve, 20));
await relay.stop();
const lags = fake.points(COLLECTION).filter((point) => committedAt.has(String(point.id))).map((point) => point.writtenAt - committedAt.get(String(point.id))!).sort((a, b) => a - b);
const percentile = (p: number) => lags[Math.min(lags.length - 1, Math.floor((p / 100) * lags.length))]!;

const result = {
  machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version, postgres: (await queuePool.query("show server_version")).rows[0].server_version },
  relay: {
    dimensions: DIMENSIONS,
    batchSize: 128,
    throughputPoints: THROUGHPUT_POINTS,
    pointsPerSecond: Math.round(throughput),
    lagRate: Math.round(achievedRate),
    lagP50Ms: percentile(50),
    lagP99Ms: percentile(99),
    lagMaxMs: lags.at(-1),
    lagSamples: lags.length,
  },
};
console.log(`relay: ${result.relay.pointsPerSecond} points/s (${THROUGHPUT_POINTS} x ${DIMENSIONS}-d backlog, batch 128, one relay)`);
console.log(`relay lag at ${result.relay.lagRate} changes/s: p50 ${result.relay.lagP50Ms} ms, p99 ${result.relay.lagP99Ms} ms, max ${result.relay.lagMaxMs} ms (${lags.length} changes)`);
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/relay.json", `${JSON.stringify(result, null, 2)}\n`);

await fake.stop();
await pool.end();
await queuePool.end();
await admin.query(`drop database ${dbName} with (force)`);
await admin.end();
if (server) await server.stop();
if (dataDir) rmSync(dataDir, { recursive: true, force: true });
