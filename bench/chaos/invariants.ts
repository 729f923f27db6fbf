import type pg from "pg";
import { chunkText } from "../../pipeline/chunker.ts";
import { qdrantPoints } from "../../test/helpers/chunks.ts";
import { MODEL_DIMENSIONS } from "../../test/helpers/pipeline.ts";
import { embedText } from "../../test/servers/ollama.ts";
import type { FakeQdrant } from "../../test/servers/qdrant.ts";

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface StoreCounts {
  documents: number;
  chunks: number;
}

/** Everything the workers still have to do: jobs, unembedded chunks, outbox rows; 0 when drained. */
export async function outstandingWork(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(`
    select (select count(*)::int from graphile_worker._private_jobs)
         + (select count(*)::int from chunks where embedding is null)
         + (select count(*)::int from outbox where state = 'pending') as n`);
  return rows[0]!.n;
}

/** Whether Qdrant holds exactly the embedded chunks, by id and content hash. */
export async function qdrantMatches(pool: pg.Pool, qdrant: FakeQdrant): Promise<{ missing: number; extra: number; stale: number }> {
  const { rows } = await pool.query<{ id: string; content_sha256: string }>("select id, content_sha256 from chunks where embedding is not null");
  const actual = qdrantPoints(qdrant);
  let missing = 0;
  let stale = 0;
  for (const row of rows) {
    const hash = actual.get(row.id);
    if (hash === undefined) missing++;
    else if (hash !== row.content_sha256) stale++;
  }
  const expected = new Set(rows.map((row) => row.id));
  const extra = [...actual.keys()].filter((id) => !expected.has(id)).length;
  return { missing, extra, stale };
}

const check = (name: string, ok: boolean, detail: string): Check => ({ name, ok, detail });

/**
 * The invariants of DESIGN.md as they apply at the end of a chaos run, once the workers have
 * drained: `live` is what every document's content must be (by source).
 */
export async function checkInvariants(pool: pg.Pool, qdrant: FakeQdrant, live: ReadonlyMap<string, string>): Promise<{ checks: Check[]; counts: StoreCounts }> {
  const checks: Check[] = [];
  const { rows: documents } = await pool.query<{ id: string; source: string; content: string }>("select id, source, content from documents");
  const stored = new Map(documents.map((document) => [document.source, document]));
  const missingDocuments = [...live.keys()].filter((source) => !stored.has(source));
  const staleDocuments = [...live].filter(([source, content]) => stored.has(source) && stored.get(source)!.content !== content);
  const extraDocuments = documents.filter((document) => !live.has(document.source));
  checks.push(check("documents", missingDocuments.length + staleDocuments.length + extraDocuments.length === 0,
    `${documents.length} stored, ${live.size} expected; missing ${missingDocuments.length}, stale content ${staleDocuments.length}, deleted but present ${extraDocuments.length}`));

  // Chunks exactly as the chunker makes them from each document's current content: same ids,
  // positions, text and hashes; nothing more (a duplicate or a leftover of an older version).
  const { rows: chunkRows } = await pool.query<{ id: string; document_id: string; chunk_index: number; content: string; content_sha256: string; embedding: number[] | null }>(
    "select id, document_id, chunk_index, content, content_sha256, embedding from chunks");
  const byDocument = new Map<string, typeof chunkRows>();
  for (const row of chunkRows) byDocument.set(row.document_id, [...(byDocument.get(row.document_id) ?? []), row]);
  let expectedChunks = 0;
  let wrongDocuments = 0;
  for (const document of documents) {
    const expected = chunkText(document.id, document.content);
    expectedChunks += expected.length;
    const actual = new Map((byDocument.get(document.id) ?? []).map((row) => [row.id, row]));
    const exact = actual.size === expected.length && (byDocument.get(document.id) ?? []).length === expected.length &&
      expected.every((chunk) => {
        const row = actual.get(chunk.id);
        return row !== undefined && row.chunk_index === chunk.index && row.content === chunk.content && row.content_sha256 === chunk.contentSha256;
      });
    if (!exact) wrongDocuments++;
  }
  checks.push(check("chunks exact", wrongDocuments === 0 && chunkRows.length === expectedChunks,
    `${chunkRows.length} chunk rows, ${expectedChunks} expected from the chunker; ${wrongDocuments} documents differ`));

  const { rows: [duplicates] } = await pool.query<{ positions: number; sources: number }>(`
    select (select count(*)::int from (select 1 from chunks group by document_id, chunk_index having count(*) > 1) d) as positions,
           (select count(*)::int from (select 1 from documents group by source having count(*) > 1) d) as sources`);
  checks.push(check("no duplicates", duplicates!.positions + duplicates!.sources === 0,
    `${duplicates!.positions} chunk positions and ${duplicates!.sources} sources held twice`));

  // Every chunk embedded, with the vector of its current text (not of a text it had before an edit).
  const unembedded = chunkRows.filter((row) => row.embedding === null).length;
  const wrongVectors = chunkRows.filter((row) => {
    if (row.embedding === null) return false;
    const expected = embedText(row.content, MODEL_DIMENSIONS);
    return row.embedding.length !== expected.length || row.embedding.some((value, i) => Math.abs(value - expected[i]!) > 1e-5);
  }).length;
  checks.push(check("every chunk embedded", unembedded + wrongVectors === 0, `${unembedded} without an embedding, ${wrongVectors} with a vector of other text`));

  const { rows: [queue] } = await pool.query<{ jobs: number; dead: number; outbox_pending: number; outbox_dead: number }>(`
    select (select count(*)::int from graphile_worker._private_jobs) as jobs,
           (select count(*)::int from dead_letters) as dead,
           (select count(*)::int from outbox where state = 'pending') as outbox_pending,
           (select count(*)::int from outbox where state = 'dead') as outbox_dead`);
  // What is left says why: locked by whom and since when, due when, after which error.
  const { rows: left } = await pool.query<{ line: string }>(`
    select format('job %s %s %s/%s key %s queue %s locked_by %s locked %s s ago, due in %s s, revision %s: %s',
                  j.id, t.identifier, j.attempts, j.max_attempts, coalesce(j.key, '-'), coalesce(j.job_queue_id::text, '-'),
                  coalesce(j.locked_by, '-'), coalesce(round(extract(epoch from now() - j.locked_at))::text, '-'),
                  round(extract(epoch from j.run_at - now())), j.revision, coalesce(left(j.last_error, 100), '-')) as line
    from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
    order by j.id limit 5`);
  checks.push(check("no jobs left", queue!.jobs === 0, `${queue!.jobs} jobs in graphile_worker._private_jobs${left.map((row) => `; ${row.line}`).join("")}`));
  const { rows: dead } = await pool.query<{ line: string }>(
    "select format('job %s %s %s %s/%s: %s', job_id, task, reason, attempts, max_attempts, left(last_error, 100)) as line from dead_letters order by id limit 5");
  checks.push(check("no dead letters", queue!.dead === 0,
    `${queue!.dead} dead letters (every fault injected was transient)${dead.map((row) => `; ${row.line}`).join("")}`));
  checks.push(check("outbox drained, none dead", queue!.outbox_pending + queue!.outbox_dead === 0, `${queue!.outbox_pending} pending, ${queue!.outbox_dead} dead`));

  const drift = await qdrantMatches(pool, qdrant);
  const points = qdrant.points("chunks");
  const chunksById = new Map(chunkRows.map((row) => [row.id, row]));
  const wrongPayload = points.filter((point) => {
    const row = chunksById.get(String(point.id));
    return row !== undefined && (point.payload.document_id !== row.document_id || point.payload.chunk_index !== row.chunk_index);
  }).length;
  checks.push(check("Qdrant equals Postgres", drift.missing + drift.extra + drift.stale + wrongPayload === 0,
    `${points.length} points; missing ${drift.missing}, extra ${drift.extra}, stale hash ${drift.stale}, wrong payload ${wrongPayload}`));

  // A live transaction is "idle in transaction" for the moment between two of its statements (a
  // sweep, a heartbeat), so one snapshot can catch a healthy one; a leaked session stays so. A
  // session counts once it has been idle in its transaction for a second.
  const { rows: idle } = await pool.query<{ application_name: string; query: string; seconds: number }>(
    `select application_name, left(query, 80) as query, extract(epoch from now() - state_change)::float8 as seconds
     from pg_stat_activity
     where datname = current_database() and state like 'idle in transaction%' and state_change < now() - interval '1 second'`);
  const described = idle.map((session) => `${session.application_name || "?"} for ${session.seconds.toFixed(1)} s after ${JSON.stringify(session.query)}`);
  checks.push(check("no session idle in transaction", idle.length === 0, `${idle.length} sessions idle in transaction${described.length > 0 ? `: ${described.join("; ")}` : ""}`));

  return { checks, counts: { documents: documents.length, chunks: chunkRows.length } };
}
