import { parseArgs } from "node:util";
import { UsageError, type CommandDefinition } from "pgconverge";
import { nonBlank, printable, progressBar } from "../cli/text.ts";
import { loadPipelineConfig } from "../config.ts";
import { expandInputs, readInput, type Rejection } from "../inputs.ts";
import { upsertDocument, type DocumentChange } from "../queries.ts";

/**
 * `pgconverge ingest <file|dir|->...`: each good file is upserted with its ingest job in one
 * transaction of its own; each bad one is reported in one line and the rest go on. Exits 1
 * if any input was rejected.
 */
export const ingestCommand: CommandDefinition = {
  usage: `ingest <file|dir|->... [--source NAME]
                                store text and markdown files (directories recursively, - for stdin
                                named by --source) and queue them for chunking and embedding`,
  async run(argv, context) {
    const { positionals, values } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { source: { type: "string" } } });
    return ingest(context, positionals, { source: nonBlank("source", values.source) });
  },
};

async function ingest(context: Parameters<CommandDefinition["run"]>[1], args: readonly string[], flags: { source: string | undefined }): Promise<number> {
  const config = loadPipelineConfig(context.env);
  if (args.length === 0) throw new UsageError("ingest needs at least one file, directory or - (stdin)");
  if (flags.source !== undefined && !args.includes("-")) throw new UsageError("--source names stdin's document; use it with -");
  if (args.filter((arg) => arg === "-").length > 1) throw new UsageError("stdin (-) can be read only once");
  const { inputs, rejected } = await expandInputs(args, flags.source ?? "stdin");
  const counts: Record<DocumentChange, number> = { created: 0, updated: 0, unchanged: 0 };
  const reject = (rejection: Rejection) => console.error(`rejected ${printable(rejection.source)}: ${printable(rejection.reason)}`);
  rejected.forEach(reject);
  let rejectedCount = rejected.length;
  if (inputs.length > 0) {
    const appPool = await context.db();
    {
      const progress = progressBar("ingest");
      for (const [done, input] of inputs.entries()) {
        progress.update(done, inputs.length);
        const result = await readInput(input, config.INGEST_MAX_BYTES);
        if (!result.ok) {
          rejectedCount++;
          reject(result);
          continue;
        }
        const { change } = await appPool.transaction((tx) => upsertDocument(tx, result.document));
        counts[change]++;
      }
      progress.update(inputs.length, inputs.length);
      progress.end();
    }
  }
  console.log(
    `ingested ${counts.created + counts.updated} (${counts.created} new, ${counts.updated} changed), unchanged ${counts.unchanged}, rejected ${rejectedCount}`,
  );
  return rejectedCount > 0 ? 1 : 0;
}
