// Pipeline benchmark: documents/s from ingest to converged (every job done, every chunk
// embedded, outbox drained, Qdrant equal to Postgres) for a generated corpus, with an
// in-process Worker running tasks/, the Ollama and Qdrant test servers, and a Relay. Documents
// are ingested as `pgconverge ingest` does, 500 per transaction. On its own, for several sizes:
//   node --conditions=pgconverge-source --import tsx bench/pipeline.ts --documents 300,3000
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { upsertDocuments } from "../pipeline/queries.ts";
import { migrate } from "../src/db/migrate.ts";
import { createAppPool, createQueuePool } from "../src/db/pools.ts";
import type { Relay } from "../src/outbox/relay.ts";
import { loadTasks } from "../src/runtime/loadTasks.ts";
import { COLLECTION, relayFor } from "../test/helpers/chunks.ts";
import { generateCorpus } from "../test/helpers/corpus.ts";
import { PIPELINE_MIGRATIONS, testLog, type TestDatabase } from "../test/helpers/db.ts";
import { sha256 } from "../test/helpers/chunks.ts";
import { converged, MODEL, MODEL_DIMENSIONS, PIPELINE_TASKS_DIR, pipelineFor } from "../test/helpers/pipeline.ts";
import { startWorker } from "../test/helpers/worker.ts";
import { FakeOllama } from "../test/servers/ollama.ts";
import { FakeQdrant } from "../test/servers/qdrant.ts";
import { createDatabase, describeMachine, round, startServer, waitUntil, type BenchServer } from "./lib.ts";

export interface PipelineBenchResult {
  documents: number;
  chunks: number;
  concurrency: number;
  ingestSeconds: number;
  seconds: number;
  documentsPerSecond: number;
  chunksPerSecond: number;
  settings: string;
}

/** Documents per ingest transaction, as `pgconverge ingest` writes them. */
const INGEST_BATCH = 500;

export async function benchPipeline(server: BenchServer, options: { documents: number; concurrency: number }): Promise<PipelineBenchResult> {
  const database = await createDatabase(server, "pipeline");
  const pool = createQueuePool(database.url, options.concurrency);
  const teardowns: Array<() => unknown> = [];
  const t = { teardown: (fn: () => unknown) => void teardowns.push(fn) };
  const ollama = new FakeOllama({ [MODEL]: MODEL_DIMENSIONS });
  const qdrant = new FakeQdrant();
  let appPool: Awaited<ReturnType<typeof createAppPool>> | null = null;
  try {
    await migrate(pool, testLog, { app: PIPELINE_MIGRATIONS });
    appPool = await createAppPool(database.url, options.concurrency, { statementTimeoutMs: 30_000 });
    const db: TestDatabase = {
      url: database.url,
      name: database.name,
      pool,
      appPool,
      query: async <Row extends pg.QueryResultRow>(text: string, values?: unknown[]) => (await pool.query<Row>(text, values)).rows,
    };
    await ollama.start();
    await qdrant.start();
    const servers = { ollama, qdrant };
    const corpus = generateCorpus(options.documents);
    await startWorker(t, db, {
      tasks: await loadTasks(PIPELINE_TASKS_DIR),
      services: { pipeline: pipelineFor(db, servers) },
      concurrency: options.concurrency,
    });
    const relay: Relay = await relayFor(db, qdrant, { dimensions: MODEL_DIMENSIONS, batchSize: 128, maxBackoffMs: 300 });
    t.teardown(() => relay.stop());
    await relay.prepareCollections();
    await relay.start();

    const started = performance.now();
    for (let i = 0; i < corpus.length; i += INGEST_BATCH) {
      const batch = corpus.slice(i, i + INGEST_BATCH).map((document) => ({ source: document.name, content: document.content, contentSha256: sha256(document.content) }));
      await appPool.transaction((tx) => upsertDocuments(tx, batch));
    }
    const ingestSeconds = (performance.now() - started) / 1000;
    await waitUntil("the pipeline to converge", () => converged(db, qdrant), { timeoutMs: 180_000, intervalMs: 100 });
    const seconds = (performance.now() - started) / 1000;
    const chunks = qdrant.points(COLLECTION).length;
    const [dead] = await db.query<{ count: number }>("select count(*)::int as count from dead_letters");
    if (dead!.count > 0) throw new Error(`bench: ${dead!.count} pipeline jobs dead-lettered`);
    return {
      documents: options.documents,
      chunks,
      concurrency: options.concurrency,
      ingestSeconds: round(ingestSeconds, 2),
      seconds: round(seconds, 2),
      documentsPerSecond: round(options.documents / seconds, 1),
      chunksPerSecond: Math.round(chunks / seconds),
      settings: `generateCorpus(${options.documents}), ${INGEST_BATCH} documents per ingest transaction, ${MODEL_DIMENSIONS}-d test embeddings, embed batch 16, relay batch 128`,
    };
  } finally {
    for (const fn of teardowns.reverse()) await fn();
    await ollama.stop();
    await qdrant.stop();
    await appPool?.end();
    await pool.end();
    await database.drop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { documents: { type: "string", default: "300,3000" }, concurrency: { type: "string", default: "10" } } });
  const server = await startServer();
  try {
    const machine = await describeMachine(server);
    const runs = [];
    for (const documents of values.documents.split(",").map(Number)) runs.push(await benchPipeline(server, { documents, concurrency: Number(values.concurrency) }));
    console.log(JSON.stringify({ machine, pipeline: runs }, null, 2));
  } finally {
    await server.stop();
  }
}
