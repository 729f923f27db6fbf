import type { Config } from "../../config.ts";
import type { Logger } from "../../log.ts";
import { search } from "../../pipeline/search.ts";
import { createEmbedder } from "../../pipeline/services.ts";
import { withContext } from "../context.ts";
import { printable } from "../printable.ts";
import { UsageError } from "../usage.ts";

/** `pgconverge search "<text>" [--limit N] [--json]`: the chunks nearest to the text, best first. */
export async function searchCommand(config: Config, log: Logger, words: readonly string[], flags: { limit: number; json: boolean }): Promise<number> {
  const text = words.join(" ").trim();
  if (text === "") throw new UsageError("search needs the text to look for");
  const hits = await withContext(config, log, 1, (context) =>
    search({ db: context.appPool, qdrant: context.qdrant, embedder: createEmbedder(config), collection: config.QDRANT_COLLECTION }, text, flags.limit),
  );
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
