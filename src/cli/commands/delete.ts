import { resolve } from "node:path";
import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { deleteDocument, findDocument } from "../../pipeline/queries.ts";
import { withContext } from "../context.ts";
import { printable } from "../printable.ts";
import { UsageError } from "../usage.ts";

/**
 * `pgconverge delete <document id or source>...`: deletes each document and its chunks, and
 * queues their points' removal from Qdrant, in one transaction per document. A source may be
 * given as ingested (an absolute path) or relative to the current directory.
 */
export async function deleteCommand(config: Config, log: Logger, references: readonly string[]): Promise<number> {
  if (references.length === 0) throw new UsageError("delete needs a document id or source");
  let missing = 0;
  await withContext(config, log, 1, async ({ appPool }) => {
    for (const reference of references) {
      const deleted = await appPool.transaction(async (tx) => {
        const document = await findDocument(tx, reference, [resolve(reference)]);
        if (!document) return null;
        return (await deleteDocument(tx, config.QDRANT_COLLECTION, document.id)) ? document : null;
      });
      if (deleted) console.log(`deleted ${deleted.id} ${printable(deleted.source)}`);
      else {
        missing++;
        console.error(`pgconverge: no document with id or source ${printable(JSON.stringify(reference))}`);
      }
    }
  });
  return missing > 0 ? 1 : 0;
}
