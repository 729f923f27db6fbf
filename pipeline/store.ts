import pRetry from "p-retry";
import type { DatabasePool } from "slonik";
import { describeError } from "pgconverge";
import { upsertDocuments, type DocumentChange, type DocumentInput, type IngestOptions } from "./queries.ts";

/** How a document of a batch ended: stored (or found unchanged), or refused by the database and why. */
export type StoreResult = { source: string; ok: true; id: string; change: DocumentChange } | { source: string; ok: false; reason: string };

/** Deadlock and serialization failure: the transaction lost a race and is run again. */
const RACE_STATES = new Set(["40P01", "40001"]);
/** Tries of a transaction that loses races, with jittered exponential backoff from 50 ms. */
const RACE_RETRIES = 6;

/**
 * SQLSTATE classes a single document's name or content can cause: data exception (22),
 * integrity constraint violation (23), program limit exceeded (54: a source too long for its
 * unique index). Anything else (a lost connection, a missing table) is not the document's doing.
 */
const DOCUMENT_STATE_CLASSES = new Set(["22", "23", "54"]);

/** The SQLSTATE of an error or of the error it wraps (slonik keeps pg's in `cause`). */
function sqlState(error: unknown): string | undefined {
  for (let current = error, depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Stores a batch of documents with distinct sources in one transaction (upsertDocuments: each
 * changed document and its ingest job commit together). Documents are written in source order,
 * so concurrent ingests of overlapping sets take their row and job-key locks in the same order,
 * and a deadlock or serialization failure that still happens is retried with backoff. A
 * document the database refuses rolls its whole batch back: the batch is then stored again one
 * document per transaction, so the others are stored and the refused one is returned with the
 * reason. Errors that are no document's doing (a lost connection) are thrown. Results in input order.
 */
export async function storeDocuments(pool: DatabasePool, documents: readonly DocumentInput[], options: IngestOptions = {}): Promise<StoreResult[]> {
  const sorted = [...documents].sort((a, b) => (a.source < b.source ? -1 : a.source > b.source ? 1 : 0));
  let stored: StoreResult[];
  try {
    // Retried here, not by slonik (which would run it again at once, 0): a jittered backoff lets the racers part.
    const results = await retryRaces(() => pool.transaction((tx) => upsertDocuments(tx, sorted, options), 0));
    stored = results.map((result, index) => ({ source: sorted[index]!.source, ok: true, ...result }));
  } catch (error) {
    const state = sqlState(error);
    if (state === undefined || !DOCUMENT_STATE_CLASSES.has(state.slice(0, 2))) throw error;
    if (sorted.length === 1) return [{ source: sorted[0]!.source, ok: false, reason: describeError(error) }];
    stored = [];
    for (const document of sorted) stored.push(...(await storeDocuments(pool, [document], options)));
  }
  const bySource = new Map(stored.map((result) => [result.source, result]));
  return documents.map((document) => bySource.get(document.source)!);
}

function retryRaces<T>(run: () => Promise<T>): Promise<T> {
  return pRetry(run, {
    retries: RACE_RETRIES,
    minTimeout: 50,
    factor: 2,
    randomize: true,
    shouldRetry: ({ error }) => RACE_STATES.has(sqlState(error) ?? ""),
  });
}
