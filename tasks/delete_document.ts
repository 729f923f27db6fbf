import { defineTask } from "pgconverge";
import { z } from "zod";
import type { PipelineServices } from "../pipeline/services.ts";
import { deleteDocument } from "../pipeline/queries.ts";

/**
 * Deletes a document and its chunks; their points leave Qdrant through the outbox. For
 * applications that delete from a job (`pgconverge delete` does the same in one transaction).
 */
export default defineTask.withServices<PipelineServices>()({
  payload: z.object({ documentId: z.string().uuid() }),
  async apply({ payload, tx, services, log }) {
    if (!(await deleteDocument(tx, services.pipeline.collection, payload.documentId))) log.info("document was already gone");
  },
});
