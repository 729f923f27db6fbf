import { parseArgs } from "node:util";
import { UsageError, type CommandDefinition } from "pgconverge";
import { printable } from "../cli/text.ts";
import { loadPipelineConfig } from "../config.ts";
import { search } from "../search.ts";
import { createEmbedder } from "../services.ts";

/** `pgconverge search "<text>" [--limit N] [--json]`: the chunks nearest to the text, best first. */
export const searchCommand: CommandDefinition = {
  usage: `search <text> [--limit N] [--json]
                                the chunks nearest to the text, read back from Postgres (default 10)`,
  async run(argv, context) {
    const { positionals: words, values } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: { limit: { type: "string" }, json: { type: "boolean", default: false } },
    });
    const limit = values.limit === undefined ? 10 : Number(values.limit);
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= 100_000)) {
      throw new UsageError(`--limit must be a whole number from 1 to 100000 (got ${JSON.stringify(values.limit)})`);
    }
    return searchText(context, words, { limit, json: values.json });
  },
};

async function searchText(context: Parameters<CommandDefinition["run"]>[1], words: readonly string[], flags: { limit: number; json: boolean }): Promise<number> {
  const text = words.join(" ").trim();
  if (text === "") throw new UsageError("search needs the text to look for");
  const config = loadPipelineConfig(context.env);
  const db = await context.db();
  const hits = await search({ db, qdrant: context.qdrant, embedder: createEmbedder(config), collection: config.QDRANT_COLLECTION }, text, flags.limit);
  if (flags.json) console.log(JSON.stringify(hits));
  else if (hits.length === 0) console.log("no matches");
  else {
    for (const [rank, hit] of hits.entries()) {
      const excerpt = hit.content.length > 300 ? `${hit.content.slice(0, 300)}…` : hit.content;
      console.log(`${rank + 1}. ${hit.score.toFixed(3)}  ${printable(hit.source)}  (chunk ${hit.chunkIndex})\n   ${printable(excerpt.replace(/\s+/g, " "))}\n`);
    }
  }
  return 0;
}
