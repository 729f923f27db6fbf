import { loadPipelineConfig } from "../../pipeline/config.ts";
import { fileURLToPath } from "node:url";
import type { Relay } from "../../src/outbox/relay.ts";
import { upsertDocument, type DocumentChange, type IngestOptions } from "../../pipeline/queries.ts";
import { createPipeline, type Pipeline } from "../../pipeline/services.ts";
import { loadTasks } from "../../src/runtime/loadTasks.ts";
import type { Worker, WorkerConfig } from "../../src/worker.ts";
import { FakeOllama } from "../servers/ollama.ts";
import { FakeQdrant } from "../servers/qdrant.ts";
import { COLLECTION, postgresPoints, qdrantPoints, relayFor, sha256 } from "./chunks.ts";
import { waitFor, type TestDatabase } from "./db.ts";
import { startWorker } from "./worker.ts";

export const PIPELINE_TASKS_DIR = fileURLToPath(new URL("../../tasks/", import.meta.url));
/** The test model: big enough for bag-of-words embeddings to rank texts by shared words. */
export const MODEL = "test-embed";
export const MODEL_DIMENSIONS = 256;

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** The Ollama and Qdrant test servers, stopped when the test ends. */
export async function startServers(t: Teardown): Promise<{ ollama: FakeOllama; qdrant: FakeQdrant }> {
  const ollama = new FakeOllama({ [MODEL]: MODEL_DIMENSIONS });
  const qdrant = new FakeQdrant();
  await ollama.start();
  await qdrant.start();
  t.teardown(() => Promise.all([ollama.stop(), qdrant.stop()]));
  return { ollama, qdrant };
}

/** The environment a pgconverge process needs to run the pipeline against the test servers. */
export function pipelineEnv(db: Pick<TestDatabase, "url">, servers: { ollama: FakeOllama; qdrant: FakeQdrant }): Record<string, string> {
  return {
    DATABASE_URL: db.url,
    PGCONVERGE_TASKS_DIR: PIPELINE_TASKS_DIR,
    OLLAMA_HOST: servers.ollama.url,
    EMBED_MODEL: MODEL,
    EMBED_DIMENSIONS: String(MODEL_DIMENSIONS),
    EMBED_BATCH_SIZE: "16",
    OLLAMA_TIMEOUT_MS: "2000",
    QDRANT_URL: servers.qdrant.url,
    QDRANT_COLLECTION: COLLECTION,
    QDRANT_TIMEOUT_MS: "2000",
    RELAY_LEASE_MS: "5000",
    RELAY_MAX_BACKOFF_MS: "300",
    RELAY_POLL_INTERVAL_MS: "300",
    RECONCILE_CRON: "off",
    METRICS_PORT: "0",
  };
}

export function pipelineFor(db: TestDatabase, servers: { ollama: FakeOllama; qdrant: FakeQdrant }): Pipeline {
  return createPipeline(loadPipelineConfig(pipelineEnv(db, servers)));
}

/** An in-process worker running the tasks in tasks/ plus a relay, both stopped when the test ends. */
export async function startPipeline(
  t: Teardown,
  db: TestDatabase,
  servers: { ollama: FakeOllama; qdrant: FakeQdrant },
  overrides: Partial<WorkerConfig> = {},
): Promise<{ worker: Worker; relay: Relay; pipeline: Pipeline }> {
  const pipeline = pipelineFor(db, servers);
  const worker = await startWorker(t, db, { tasks: await loadTasks(PIPELINE_TASKS_DIR), services: { pipeline }, ...overrides });
  const relay = await relayFor(db, servers.qdrant, { dimensions: MODEL_DIMENSIONS, maxBackoffMs: 300 });
  t.teardown(() => relay.stop());
  await relay.start();
  return { worker, relay, pipeline };
}

/** Ingests text as `pgconverge ingest` does: the document and its job in one transaction. */
export async function ingest(db: TestDatabase, source: string, content: string, options: IngestOptions = {}): Promise<{ id: string; change: DocumentChange }> {
  return db.appPool.transaction((tx) => upsertDocument(tx, { source, content, contentSha256: sha256(content) }, options));
}

/** Every job done, every chunk embedded, the outbox drained and Qdrant equal to Postgres. */
export async function converged(db: TestDatabase, qdrant: FakeQdrant): Promise<boolean> {
  const [state] = await db.query<{ jobs: number; unembedded: number; outbox: number }>(`
    select (select count(*)::int from graphile_worker._private_jobs) as jobs,
           (select count(*)::int from chunks where embedding is null) as unembedded,
           (select count(*)::int from outbox) as outbox
  `);
  if (state!.jobs + state!.unembedded + state!.outbox > 0) return false;
  const expected = await postgresPoints(db);
  const actual = qdrantPoints(qdrant);
  return expected.size === actual.size && [...expected].every(([id, hash]) => actual.get(id) === hash);
}

export async function waitConverged(db: TestDatabase, qdrant: FakeQdrant, timeoutMs = 60_000): Promise<void> {
  await waitFor("the pipeline to converge", async () => (await converged(db, qdrant)) || undefined, { timeoutMs, intervalMs: 100 });
}
