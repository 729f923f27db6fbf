import { AsyncLocalStorage } from "node:async_hooks";
import { Ollama } from "ollama";
import { PermanentError, splitCredentials } from "pgconverge";

export interface EmbedderSettings {
  /** OLLAMA_HOST; credentials in it (`http://user:password@host`) are sent as Basic authorization. */
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

const signalledFetch: typeof fetch = async (input, init) => {
  const signal = requestSignal.getStore();
  const response = await fetch(input, signal ? { ...init, signal: init?.signal ? AbortSignal.any([init.signal, signal]) : signal } : init);
  if (response.status === 429) throw await throttled(response);
  return response.ok ? response : asJsonError(response);
};

/**
 * A 429 as an error that keeps the Retry-After header: the official client turns an error
 * response into a ResponseError with the status and message only, and the fleet's pause
 * (callService) needs to know how long the server asked for.
 */
async function throttled(response: Response): Promise<Error> {
  const text = await response.text().catch(() => "");
  let message = text.trim().slice(0, 500);
  try {
    message = String((JSON.parse(text) as { error?: unknown }).error ?? message);
  } catch {
    // not JSON: the text itself
  }
  const retryAfter = response.headers.get("retry-after");
  return Object.assign(new Error(`Ollama answered 429 Too Many Requests${message ? `: ${message}` : ""}`), {
    name: "ResponseError",
    status_code: 429,
    ...(retryAfter === null ? {} : { headers: { "retry-after": retryAfter } }),
  });
}

/**
 * The client prints lines of its own to stdout, outside the log, when an error response is not
 * JSON (a proxy's 502 page, say): such a body reaches it as an Ollama JSON error instead.
 */
async function asJsonError(response: Response): Promise<Response> {
  const text = await response.text();
  let body = text;
  try {
    JSON.parse(text);
  } catch {
    body = JSON.stringify({ error: text.trim().slice(0, 500) || `${response.status} ${response.statusText}` });
  }
  return new Response(body, { status: response.status, statusText: response.statusText, headers: { "content-type": "application/json" } });
}

/**
 * Embeds text with Ollama through the official client: one client (and so one keep-alive
 * socket pool) per process, inputs in batches, each request under a deadline and the
 * caller's AbortSignal. A missing model is a permanent error that says how to fix it;
 * connection errors, timeouts and 5xx stay transient.
 */
export class Embedder {
  private readonly client: Ollama;
  /** The host without its credentials: the one messages may name. */
  private readonly host: string;

  readonly settings: EmbedderSettings;

  constructor(settings: EmbedderSettings) {
    this.settings = settings;
    // fetch refuses a URL with credentials (and would quote it in its error): they go in a header.
    const { url, authorization } = splitCredentials(settings.host);
    this.host = url;
    this.client = new Ollama({ host: url, fetch: signalledFetch, ...(authorization ? { headers: { authorization } } : {}) });
  }

  async embed(texts: readonly string[], signal?: AbortSignal): Promise<number[][]> {
    const vectors: number[][] = [];
    for (let start = 0; start < texts.length; start += this.settings.batchSize) {
      const batch = texts.slice(start, start + this.settings.batchSize);
      const deadline = AbortSignal.timeout(this.settings.timeoutMs);
      const combined = signal ? AbortSignal.any([signal, deadline]) : deadline;
      const response = await requestSignal.run(combined, () => this.client.embed({ model: this.settings.model, input: batch })).catch((error: unknown) => {
        throw this.explain(error, deadline);
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

  /** `deadline` is this request's own: a caller's signal that fired is the caller's to explain. */
  private explain(error: unknown, deadline: AbortSignal): unknown {
    const status = (error as { status_code?: unknown } | null)?.status_code;
    const message = (error as Error | null)?.message ?? String(error);
    if (status === 404 && /not found/.test(message)) {
      return new PermanentError(`Ollama model "${this.settings.model}" is not available (${message}); run: ollama pull ${this.settings.model}`, { cause: error });
    }
    if (deadline.aborted) {
      return Object.assign(new Error(`Ollama request exceeded its ${this.settings.timeoutMs} ms deadline`), { name: "TimeoutError", cause: error });
    }
    const code = ((error as { cause?: { code?: unknown } } | null)?.cause)?.code;
    if (error instanceof TypeError && typeof code === "string") {
      // fetch's own message is only "fetch failed"; the reason is in its cause.
      return Object.assign(new Error(`Ollama at ${this.host} is unreachable (${code})`, { cause: error }), { code });
    }
    return error;
  }
}
