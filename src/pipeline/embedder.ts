import { AsyncLocalStorage } from "node:async_hooks";
import { Ollama } from "ollama";
import { PermanentError } from "../runtime/errors.ts";

export interface EmbedderSettings {
  host: string;
  model: string;
  /** Deadline of each /api/embed request, ms. */
  timeoutMs: number;
  /** Inputs per request. */
  batchSize: number;
}

/**
 * The signal of the embed call in progress. The official client takes no per-request
 * AbortSignal, but it takes a fetch implementation: ours adds the caller's signal.
 */
const requestSignal = new AsyncLocalStorage<AbortSignal>();

const signalledFetch: typeof fetch = (input, init) => {
  const signal = requestSignal.getStore();
  if (!signal) return fetch(input, init);
  return fetch(input, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, signal]) : signal });
};

/**
 * Embeds text with Ollama through the official client: one client (and so one keep-alive
 * socket pool) per process, inputs in batches, each request under a deadline and the
 * caller's AbortSignal. A missing model is a permanent error that says how to fix it;
 * connection errors, timeouts and 5xx stay transient.
 */
export class Embedder {
  private readonly client: Ollama;

  constructor(readonly settings: EmbedderSettings) {
    this.client = new Ollama({ host: settings.host, fetch: signalledFetch });
  }

  async embed(texts: readonly string[], signal?: AbortSignal): Promise<number[][]> {
    const vectors: number[][] = [];
    for (let start = 0; start < texts.length; start += this.settings.batchSize) {
      const batch = texts.slice(start, start + this.settings.batchSize);
      const deadline = AbortSignal.timeout(this.settings.timeoutMs);
      const combined = signal ? AbortSignal.any([signal, deadline]) : deadline;
      const response = await requestSignal.run(combined, () => this.client.embed({ model: this.settings.model, input: batch })).catch((error: unknown) => {
        throw this.explain(error, combined);
      });
      if (response.embeddings.length !== batch.length) {
        throw new PermanentError(`Ollama returned ${response.embeddings.length} embeddings for ${batch.length} inputs`);
      }
      vectors.push(...response.embeddings);
    }
    return vectors;
  }

  /** The model's vector size, from one probe embedding. */
  async dimensions(signal?: AbortSignal): Promise<number> {
    const [vector] = await this.embed(["dimension probe"], signal);
    return vector!.length;
  }

  private explain(error: unknown, signal: AbortSignal): unknown {
    const status = (error as { status_code?: unknown } | null)?.status_code;
    const message = (error as Error | null)?.message ?? String(error);
    if (status === 404 && /not found/.test(message)) {
      return new PermanentError(`Ollama model "${this.settings.model}" is not available (${message}); run: ollama pull ${this.settings.model}`, { cause: error });
    }
    if (signal.aborted && signal.reason instanceof DOMException && signal.reason.name === "TimeoutError") {
      return Object.assign(new Error(`Ollama request exceeded its ${this.settings.timeoutMs} ms deadline`), { name: "TimeoutError", cause: error });
    }
    const code = ((error as { cause?: { code?: unknown } } | null)?.cause)?.code;
    if (error instanceof TypeError && typeof code === "string") {
      // fetch's own message is only "fetch failed"; the reason is in its cause.
      return Object.assign(new Error(`Ollama at ${this.settings.host} is unreachable (${code})`, { cause: error }), { code });
    }
    return error;
  }
}
