import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { UsageError, type CommandDefinition } from "pgconverge";
import { printable } from "../cli/text.ts";
import { loadPipelineConfig } from "../config.ts";
import { deleteDocument, findDocument } from "../queries.ts";

/**
 * `pgconverge delete <document id or source>...`: deletes each document and its chunks, and
 * queues their points' removal from Qdrant, in one transaction per document. A source may be
 * given as ingested (an absolute path) or relative to the current directory.
 */
export const deleteCommand: CommandDefinition = {
  usage: `delete <id|source>...         delete documents; their points leave Qdrant through the outbox`,
  async run(argv, context) {
    const { positionals: references } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: {} });
    if (references.length === 0) throw new UsageError("delete needs a document id or source");
    const config = loadPipelineConfig(context.env);
    const appPool = await context.db();
    let missing = 0;
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
    return missing > 0 ? 1 : 0;
  },
};
