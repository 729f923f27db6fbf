import { z } from "zod";
import { deleteDocument } from "../src/pipeline/queries.ts";
import { defineTask } from "../src/runtime/defineTask.ts";

/**
 * Deletes a document and its chunks; their points leave Qdrant through the outbox. For
 * applications that delete from a job (`pgconverge delete` does the same in one transaction).
 */
export default defineTask({
  payload: z.object({ documentId: z.string().uuid() }),
  async apply({ payload, tx, services, log }) {
    if (!(await deleteDocument(tx, services.pipeline.collection, payload.documentId))) log.info("document was already gone");
  },
});
