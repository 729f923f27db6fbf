import { ConfigError, describeError } from "pgconverge";
import type { Logger } from "pino";
import type { PipelineConfig as Config } from "./config.ts";
import { DEFAULT_CHUNKER, type ChunkerOptions } from "./chunker.ts";
import { Embedder } from "./embedder.ts";

/** What the pipeline's tasks and commands share within one process. */
export interface Pipeline {
  embedder: Embedder;
  /** The Qdrant collection chunks are mirrored into. */
  collection: string;
  /** The vector size every embedding must have: the collection's. */
  dimensions: number;
  chunker: ChunkerOptions;
}

/** The services the pipeline's tasks need (`defineTask.withServices<PipelineServices>()`). */
export interface PipelineServices {
  pipeline: Pipeline;
}

/** The process's one Ollama client. */
export function createEmbedder(config: Config): Embedder {
  return new Embedder({ host: config.OLLAMA_HOST, model: config.EMBED_MODEL, timeoutMs: config.OLLAMA_TIMEOUT_MS, batchSize: config.EMBED_BATCH_SIZE });
}

export function createPipeline(config: Config, embedder: Embedder = createEmbedder(config)): Pipeline {
  return { embedder, collection: config.QDRANT_COLLECTION, dimensions: config.EMBED_DIMENSIONS, chunker: DEFAULT_CHUNKER };
}

/** A short wait: a worker must not hang at start because Ollama is slow to load the model. */
const MODEL_CHECK_TIMEOUT_MS = 5_000;

/**
 * Checks EMBED_DIMENSIONS against what the model returns, so a mismatch stops the worker with
 * one line instead of dead-lettering every embedding. Ollama may start after the worker, or
 * pull the model later: then this only warns, and the embed jobs report it when they run.
 */
export async function checkModelDimensions(config: Config, embedder: Embedder, log: Logger): Promise<void> {
  let dimensions: number;
  const check = AbortSignal.timeout(MODEL_CHECK_TIMEOUT_MS);
  try {
    dimensions = await embedder.dimensions(check);
  } catch (error) {
    const reason = check.aborted ? `no answer within ${MODEL_CHECK_TIMEOUT_MS} ms` : describeError(error);
    log.warn({ error: reason, host: config.OLLAMA_HOST /* the logger redacts credentials */ }, "could not check the embedding model; embed jobs retry until Ollama answers");
    return;
  }
  if (dimensions !== config.EMBED_DIMENSIONS) {
    throw new ConfigError(`EMBED_DIMENSIONS: model "${config.EMBED_MODEL}" returns ${dimensions}-dimensional vectors; set EMBED_DIMENSIONS=${dimensions} (got "${config.EMBED_DIMENSIONS}")`);
  }
}
