import { defineTask, enqueueSync, PermanentError } from "pgconverge";
import { z } from "zod";
import { loadPipelineConfig } from "../pipeline/config.ts";
import type { PipelineServices } from "../pipeline/services.ts";
import { chunksToEmbed, documentJobKey, EMBED_CHUNKS, hasUnembeddedChunks, lockDocument, storeEmbeddings } from "../pipeline/queries.ts";

/**
 * Chunks per job: enough to batch Ollama requests, few enough that one job stays well within
 * TASK_TIMEOUT_MS on a CPU-only Ollama. A longer document continues in a follow-up job.
 */
const CHUNKS_PER_JOB = 64;

/**
 * Embeds a document's unembedded chunks. prepare calls Ollama with no transaction open;
 * apply stores the vectors, queues the points for Qdrant and (if chunks remain) the next
 * job, all in the job's one transaction.
 */
export default defineTask.withServices<PipelineServices>()({
  payload: z.object({ documentId: z.string().uuid() }),
  // Ollama is shared by the fleet: EMBED_CONCURRENCY_LIMIT calls at a time, whatever the number of workers.
  flow: { concurrency: loadPipelineConfig(process.env).EMBED_CONCURRENCY_LIMIT },
  async prepare({ payload, db, services, callService }) {
    const { pipeline } = services;
    const chunks = await chunksToEmbed(db, payload.documentId, CHUNKS_PER_JOB);
    if (chunks.length === 0) return [];
    // Under the fleet's limits for Ollama (OLLAMA_RATE_LIMIT inputs a second, its 429 pause and
    // circuit breaker): when it may not be called yet, the job waits without using an attempt.
    const texts = chunks.map((chunk) => chunk.content);
    const vectors = await callService("ollama", (signal) => pipeline.embedder.embed(texts, signal), { cost: texts.length });
    return chunks.map((chunk, i) => {
      const vector = vectors[i]!;
      if (vector.length !== pipeline.dimensions) {
        throw new PermanentError(
          `model "${pipeline.embedder.settings.model}" returned ${vector.length}-dimensional vectors; EMBED_DIMENSIONS is ${pipeline.dimensions}`,
        );
      }
      if (!vector.every(Number.isFinite)) throw new PermanentError(`model "${pipeline.embedder.settings.model}" returned a vector with non-finite values`);
      return { id: chunk.id, contentSha256: chunk.content_sha256, vector };
    });
  },
  async apply({ payload, prepared, tx, addJob, services, log }) {
    // Same lock order as ingest_document, which may be replacing these chunks right now.
    if (!(await lockDocument(tx, payload.documentId))) {
      log.info("document was deleted; embeddings discarded");
      return;
    }
    const { pipeline } = services;
    const stored = await storeEmbeddings(tx, pipeline.embedder.settings.model, prepared);
    await enqueueSync(tx, pipeline.collection, stored);
    if (await hasUnembeddedChunks(tx, payload.documentId)) {
      await addJob(EMBED_CHUNKS, payload, { jobKey: documentJobKey(EMBED_CHUNKS, payload.documentId) });
    }
    log.debug({ embedded: stored.length, discarded: prepared.length - stored.length }, "chunks embedded");
  },
});
