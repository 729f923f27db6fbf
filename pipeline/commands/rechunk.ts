import { resolve } from "node:path";
import { sql } from "slonik";
import { z } from "zod";
import { parseArgs } from "node:util";
import { UsageError, type CommandDefinition } from "pgconverge";
import { findDocument, queueIngests } from "../queries.ts";

/**
 * `pgconverge rechunk --all | <document id or source>...`: queues every named document (or all
 * of them) for chunking again, in one transaction, so a worker makes its chunks match what
 * today's chunker makes of its content. Upgrading from 0.1, whose chunker rewrote text
 * (`127.0.0.1` stored as `127. 0. 0. 1`), needs `rechunk --all` once. Chunks whose text is
 * unchanged keep their ids and embeddings; the others are replaced and re-embedded. If a named
 * document is missing, nothing is queued and the command exits 1.
 */
export const rechunkCommand: CommandDefinition = {
  usage: `rechunk <id|source>... | --all
                                queue documents for chunking again (after upgrading from 0.1: --all)`,
  async run(argv, context) {
    const { positionals: references, values: flags } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { all: { type: "boolean", default: false } } });
    if (flags.all === references.length > 0) throw new UsageError("rechunk needs --all or document ids or sources, not both");
    const appPool = await context.db();
    return appPool.transaction(async (tx) => {
      const ids: string[] = flags.all ? [...(await tx.anyFirst(sql.type(z.object({ id: z.string() }))`select id from documents order by id`))] : [];
      const missing: string[] = [];
      for (const reference of references) {
        const document = await findDocument(tx, reference, [resolve(reference)]);
        if (document) ids.push(document.id);
        else missing.push(reference);
      }
      for (const reference of missing) console.error(`pgconverge: no document with id or source ${JSON.stringify(reference)}`);
      if (missing.length > 0) return 1;
      const unique = [...new Set(ids)];
      await queueIngests(tx, unique);
      console.log(`queued ${unique.length} document${unique.length === 1 ? "" : "s"} for chunking; a running worker (npm run worker) applies it`);
      return 0;
    });
  },
};
