import { sql, type CommonQueryMethods, type DatabasePool } from "slonik";
import { z } from "zod";
import { listDeadLetters, retryDeadLetters, discardDeadLetters, type DeadLetterSelection } from "../ops/deadLetters.ts";
import { listChanges, readOwner, recordReconcileRun, retryDead } from "../outbox/outbox.ts";
import { reconcile, type DriftReport, type ReconcileOptions } from "../outbox/reconciler.ts";
import type { QdrantClient } from "../outbox/qdrant.ts";
import type { Sync } from "../outbox/sync.ts";

/**
 * What the dashboard reads and does beyond `status` (src/ops/status.ts) and the job listing
 * (src/ops/jobs.ts): the last hour's throughput, the audit log, and the actions, each of which
 * writes its audit entry in its own transaction.
 */

export interface MinuteCounts {
  /** Start of the minute, ISO 8601. */
  minute: string;
  applied: number;
  dead: number;
}

const MinuteRow = z.object({ minute: z.coerce.date(), applied: z.coerce.number(), dead: z.coerce.number() });

/** Jobs applied and dead-lettered per minute over the last hour (the job_throughput view), oldest first, every minute present. */
export async function readThroughput(db: CommonQueryMethods): Promise<MinuteCounts[]> {
  const rows = await db.any(sql.type(MinuteRow)`
    select minutes.minute, coalesce(sum(t.applied), 0) as applied, coalesce(sum(t.dead), 0) as dead
    from generate_series(date_trunc('minute', now()) - interval '59 minutes', date_trunc('minute', now()), interval '1 minute') as minutes (minute)
    left join job_throughput t on t.minute = minutes.minute
    group by minutes.minute
    order by minutes.minute
  `);
  return rows.map((row) => ({ minute: row.minute.toISOString(), applied: row.applied, dead: row.dead }));
}

export interface AuditEntry {
  id: string;
  at: string;
  actor: string;
  action: string;
  target: string;
  detail: unknown;
}

const AuditRow = z.object({ id: z.coerce.string(), at: z.coerce.date(), actor: z.string(), action: z.string(), target: z.string(), detail: z.unknown() });

export async function readAudit(db: CommonQueryMethods, limit: number): Promise<AuditEntry[]> {
  const rows = await db.any(sql.type(AuditRow)`select id, at, actor, action, target, detail from dashboard_audit order by at desc, id desc limit ${limit}`);
  return rows.map((row) => ({ id: row.id, at: row.at.toISOString(), actor: row.actor, action: row.action, target: row.target, detail: row.detail ?? null }));
}

async function audit(tx: CommonQueryMethods, actor: string, action: string, target: string, detail: unknown): Promise<void> {
  await tx.query(sql.unsafe`
    insert into dashboard_audit (actor, action, target, detail) values (${actor}, ${action}, ${target}, ${sql.jsonb(detail as never)})
  `);
}

function describeSelection(selection: DeadLetterSelection): string {
  if ("ids" in selection) return `dead letters ${selection.ids.join(", ")}`;
  return selection.task === undefined ? "all dead letters" : `all dead letters of task ${selection.task}`;
}

export interface DeadLetterPreview {
  count: number;
  byTask: Record<string, number>;
  /** The first few of them, to show. */
  sample: Awaited<ReturnType<typeof listDeadLetters>>;
}

const PreviewRow = z.object({ task: z.string(), n: z.coerce.number() });

/** What a retry or discard of this selection would touch, read without changing anything. */
export async function previewDeadLetters(db: CommonQueryMethods, selection: DeadLetterSelection): Promise<DeadLetterPreview> {
  const where =
    "ids" in selection
      ? sql.fragment`id = any(${sql.array([...selection.ids], "int8")})`
      : selection.task === undefined
        ? sql.fragment`true`
        : sql.fragment`task = ${selection.task}`;
  const counts = await db.any(sql.type(PreviewRow)`select task, count(*) as n from dead_letter_list where ${where} group by task order by task`);
  const all = await listDeadLetters(db, { limit: 500, ...("all" in selection && selection.task !== undefined ? { task: selection.task } : {}) });
  const sample = ("ids" in selection ? all.filter((row) => selection.ids.includes(row.id)) : all).slice(0, 20);
  return { count: counts.reduce((total, row) => total + row.n, 0), byTask: Object.fromEntries(counts.map((row) => [row.task, row.n])), sample };
}

export async function retryDeadLettersAudited(pool: DatabasePool, actor: string, selection: DeadLetterSelection) {
  return pool.transaction(async (tx) => {
    const retried = await retryDeadLetters(tx, selection);
    await audit(tx, actor, "dlq.retry", describeSelection(selection), { retried: retried.map((row) => ({ deadLetter: row.deadLetterId, job: row.jobId })) });
    return retried;
  });
}

export async function discardDeadLettersAudited(pool: DatabasePool, actor: string, selection: DeadLetterSelection) {
  return pool.transaction(async (tx) => {
    const ids = "ids" in selection ? selection.ids : (await listDeadLetters(tx, { limit: 100_000, ...(selection.task === undefined ? {} : { task: selection.task }) })).map((row) => row.id);
    const discarded = await discardDeadLetters(tx, ids);
    await audit(tx, actor, "dlq.discard", describeSelection(selection), { discarded });
    return discarded;
  });
}

export async function retryOutboxAudited(pool: DatabasePool, actor: string, ids: readonly string[] | undefined) {
  return pool.transaction(async (tx) => {
    const retried = await retryDead(tx, ids);
    await audit(tx, actor, "outbox.retry", ids === undefined ? "all dead outbox changes" : `outbox changes ${ids.join(", ")}`, { retried });
    return retried;
  });
}

/** A reconcile and its audit entry; the run's settings (read consistency, progress, abort) are the caller's. */
export async function reconcileAudited(
  pool: DatabasePool,
  qdrant: QdrantClient,
  actor: string,
  sync: Sync,
  repair: boolean,
  run: Pick<ReconcileOptions, "readConsistency" | "onProgress" | "signal"> = {},
): Promise<DriftReport> {
  const owner = await readOwner(pool);
  const report = await reconcile({ pool, qdrant, sync, owner, repair, ...run });
  await pool.transaction(async (tx) => {
    await recordReconcileRun(tx, report);
    await audit(tx, actor, repair ? "reconcile.repair" : "reconcile.dry_run", sync.collection, report);
  });
  return report;
}

export { listDeadLetters, listChanges };
