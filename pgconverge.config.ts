// This repository's application: the reference pipeline (documents, chunks, Ollama, search),
// a user of pgconverge's public API like any other. `npm run worker` and
// `node bin/pgconverge.js ingest|search|delete|rechunk` read this file.
import { defineConfig } from "pgconverge";
import { chunkSync } from "./pipeline/chunkSync.ts";
import { deleteCommand } from "./pipeline/commands/delete.ts";
import { ingestCommand } from "./pipeline/commands/ingest.ts";
import { rechunkCommand } from "./pipeline/commands/rechunk.ts";
import { searchCommand } from "./pipeline/commands/search.ts";
import { loadPipelineConfig } from "./pipeline/config.ts";
import { EMBED_CHUNKS } from "./pipeline/queries.ts";
import { checkModelDimensions, createPipeline, type PipelineServices } from "./pipeline/services.ts";

// Read once: a bad pipeline setting stops every command with one line, as the core's do.
const settings = loadPipelineConfig(process.env);

export default defineConfig({
  // The task files (ingest_document, embed_chunks, delete_document); PGCONVERGE_TASKS_DIR or --tasks still override.
  tasks: process.env.PGCONVERGE_TASKS_DIR || "tasks",
  async services({ log, tasks }): Promise<PipelineServices> {
    const pipeline = createPipeline(settings);
    // A model of the wrong size is fatal at start; an unreachable Ollama is only waited for.
    if (tasks.includes(EMBED_CHUNKS)) await checkModelDimensions(settings, pipeline.embedder, log);
    return { pipeline };
  },
  syncs: [chunkSync({ collection: settings.QDRANT_COLLECTION, dimensions: settings.EMBED_DIMENSIONS })],
  // Ollama's fleet-wide rate in inputs a second (FLOW_SERVICE_RATES=ollama=N wins).
  flow: { services: settings.OLLAMA_RATE_LIMIT > 0 ? { ollama: { rate: settings.OLLAMA_RATE_LIMIT } } : {} },
  commands: { ingest: ingestCommand, delete: deleteCommand, rechunk: rechunkCommand, search: searchCommand },
});
