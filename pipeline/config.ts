import { Ollama } from "ollama";
import { z } from "zod";
import { ConfigError } from "pgconverge";

/** A whole-number setting within bounds (environment values are strings, hence coerce). */
const int = (min: number, max: number) =>
  z.coerce
    .number({ invalid_type_error: "must be a whole number" })
    .int("must be a whole number")
    .min(min, `must be at least ${min}`)
    .max(max, `must be at most ${max}`);

/** Turns a check returning the problem (or null) into a zod refinement. */
function problemsOf(check: (value: string) => string | null) {
  return (value: string, context: z.RefinementCtx) => {
    const problem = check(value);
    if (problem) context.addIssue({ code: z.ZodIssueCode.custom, message: problem });
  };
}

const URL_SYNTAX = "is not a valid URL: check the host and port, and percent-encode @ : / ? # % and spaces in the user name and password";

/** OLLAMA_HOST as the ollama client reads it: host[:port], :port, or an http(s) URL. */
function ollamaHostProblem(value: string): string | null {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value) && !/^https?:\/\//i.test(value)) return "must be host[:port] or an http:// or https:// URL";
  if (/\s/.test(value)) return "must be host[:port] or an http(s):// URL, without spaces";
  try {
    new Ollama({ host: value });
  } catch {
    return URL_SYNTAX;
  }
  return null;
}

/**
 * The reference pipeline's settings (Ollama, embeddings, its Qdrant collection, ingest), read
 * from the same environment as the queue's. `.env.example` documents them in a section of
 * their own; keep the two in step.
 */
export const PipelineShape = z.object({
  /** The collection chunks are mirrored into; created on first use with EMBED_DIMENSIONS. */
  QDRANT_COLLECTION: z.string().regex(/^[A-Za-z0-9_-]{1,255}$/, "must be letters, digits, _ or -").default("chunks"),
  /** Ollama server that embeds chunks and search queries (Ollama's own OLLAMA_HOST format). */
  OLLAMA_HOST: z.string().superRefine(problemsOf(ollamaHostProblem)).default("http://127.0.0.1:11434"),
  /** Embedding model; pull it first (`ollama pull nomic-embed-text`). */
  EMBED_MODEL: z.string().min(1).default("nomic-embed-text"),
  /** Vector size of EMBED_MODEL's embeddings and of the Qdrant collection (768 for nomic-embed-text); checked against the model at start. */
  EMBED_DIMENSIONS: int(1, 65_536).default(768),
  /** Inputs per Ollama embed request. */
  EMBED_BATCH_SIZE: int(1, 2048).default(32),
  /** Deadline of each Ollama request, ms. */
  OLLAMA_TIMEOUT_MS: int(100, 600_000).default(30_000),
  /**
   * Most embed_chunks jobs running at once in the whole fleet (a fleet-wide limit, so at most
   * this many Ollama requests at a time however many workers run); the worker's
   * FLOW_TASK_CONCURRENCY=embed_chunks=n overrides it.
   */
  EMBED_CONCURRENCY_LIMIT: int(1, 100_000).default(4),
  /**
   * Fleet-wide limit of Ollama embedding inputs per second, all workers together (the "ollama"
   * service's rate; each embed call costs its number of inputs). 0: no limit.
   */
  OLLAMA_RATE_LIMIT: z.coerce.number({ invalid_type_error: "must be a number" }).min(0, "must be 0 (no limit) or a positive number of inputs per second").finite("must be a finite number").default(0),
  /** `pgconverge ingest` rejects files larger than this, bytes. */
  INGEST_MAX_BYTES: int(1, 1_073_741_824).default(5_242_880),
  /**
   * How long after `pgconverge ingest` first sees a document change its chunking waits, ms:
   * edits within the window (a burst of saves) coalesce into one chunking pass over the latest
   * text, and so one embedding of each changed chunk. 0 queues it to run at once.
   */
  INGEST_DEBOUNCE_MS: int(0, 3_600_000).default(1_000),
});

export type PipelineConfig = z.infer<typeof PipelineShape>;

/** Reads and validates the pipeline's settings; a bad one is a ConfigError of one line naming it (exit 2). */
export function loadPipelineConfig(env: NodeJS.ProcessEnv = process.env): PipelineConfig {
  const names = Object.keys(PipelineShape.shape);
  const present = Object.fromEntries(names.filter((key) => env[key] !== undefined && env[key] !== "").map((key) => [key, env[key]]));
  const parsed = PipelineShape.safeParse(present);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const name = String(issue.path[0]);
  throw new ConfigError(`${name}: ${issue.message}${present[name] === undefined ? "" : ` (got ${JSON.stringify(present[name])})`}`);
}
