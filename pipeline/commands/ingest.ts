import { parseArgs } from "node:util";
import { UsageError, type CommandDefinition } from "pgconverge";
import { nonBlank, printable, progressBar } from "../cli/text.ts";
import { loadPipelineConfig } from "../config.ts";
import { expandInputs, readInput, type Rejection, type TextDocument } from "../inputs.ts";
import type { DocumentChange } from "../queries.ts";
import { storeDocuments } from "../store.ts";

/**
 * Documents per transaction, and the text that closes a batch early: a few statements per batch
 * instead of several per file (2,000 small files went from 33 s to well under 5 s), while a
 * batch of large files stays a few megabytes in memory.
 */
const BATCH_DOCUMENTS = 500;
const BATCH_CHARACTERS = 8_000_000;

/**
 * `pgconverge ingest <file|dir|->...`: good files are upserted with their ingest jobs, a batch
 * of them per transaction (a document and its job always commit together; unchanged content is
 * skipped without a write); each bad one, whether the file or the database refused it, is
 * reported in one line and the rest go on. Exits 1 if any input was rejected.
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
    const progress = progressBar("ingest");
    let batch: TextDocument[] = [];
    let batchSources = new Set<string>();
    let batchBytes = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const documents = batch;
      batch = [];
      batchSources = new Set();
      batchBytes = 0;
      for (const result of await storeDocuments(appPool, documents, { debounceMs: config.INGEST_DEBOUNCE_MS })) {
        if (result.ok) counts[result.change]++;
        else {
          rejectedCount++;
          reject(result);
        }
      }
    };
    for (const [done, input] of inputs.entries()) {
      progress.update(done, inputs.length);
      const result = await readInput(input, config.INGEST_MAX_BYTES);
      if (!result.ok) {
        rejectedCount++;
        reject(result);
        continue;
      }
      // A source named twice goes into the next batch, so the later content wins, as it did file by file.
      if (batchSources.has(result.document.source)) await flush();
      batch.push(result.document);
      batchSources.add(result.document.source);
      batchBytes += result.document.content.length;
      if (batch.length >= BATCH_DOCUMENTS || batchBytes >= BATCH_CHARACTERS) await flush();
    }
    await flush();
    progress.update(inputs.length, inputs.length);
    progress.end();
  }
  console.log(
    `ingested ${counts.created + counts.updated} (${counts.created} new, ${counts.updated} changed), unchanged ${counts.unchanged}, rejected ${rejectedCount}`,
  );
  return rejectedCount > 0 ? 1 : 0;
}
