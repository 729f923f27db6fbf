import { defineTask, enqueueSync } from "pgconverge";
import { z } from "zod";
import type { PipelineServices } from "../pipeline/services.ts";
import { chunkText } from "../pipeline/chunker.ts";
import { documentJobKey, EMBED_CHUNKS, lockDocument, replaceChunks } from "../pipeline/queries.ts";

/**
 * Splits a document's current content into chunks and makes its chunk rows match, in one
 * transaction: removed chunks and moved embedded chunks go to the outbox, new text is queued
 * for embedding. Unchanged chunks keep their ids and embeddings, so an edit re-embeds only
 * what changed. The payload names the document; the content is read at run time, so a run
 * after a later edit processes the latest text.
 */
export default defineTask.withServices<PipelineServices>()({
  payload: z.object({ documentId: z.string().uuid() }),
  async apply({ payload, tx, addJob, services, log }) {
    const document = await lockDocument(tx, payload.documentId);
    if (!document) {
      log.info("document was deleted; nothing to chunk");
      return;
    }
    const { pipeline } = services;
    const chunks = chunkText(document.id, document.content, pipeline.chunker);
    const { removed, moved, needsEmbedding } = await replaceChunks(tx, document.id, chunks);
    await enqueueSync(tx, pipeline.collection, [...removed, ...moved]);
    if (needsEmbedding) {
      await addJob(EMBED_CHUNKS, { documentId: document.id }, { jobKey: documentJobKey(EMBED_CHUNKS, document.id) });
    }
    log.debug({ chunks: chunks.length, removed: removed.length, moved: moved.length }, "document chunked");
  },
});
