import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";
import { runStatement, type Queryable } from "../db/queryable.ts";
import { pointIdText, type PointId } from "./sync.ts";

/** The outbox's SQL (and the reconciler's and the owner's), one statement per function. */

const ENQUEUE_POINT_CHANGES = `
  insert into outbox (collection, point_id)
  select $1::text, id from jsonb_array_elements_text($2::jsonb) as id
  on conflict (collection, point_id) do update set
    version = outbox.version + 1,
    state = 'pending',
    attempts = 0,
    next_attempt_at = now(),
    last_error = null,
    dead_at = null,
    created_at = case when outbox.state = 'dead' then now() else outbox.created_at end,
    updated_at = now()
`;

/**
 * The outbox write API: call it inside the transaction that changes the data. One row per
 * (collection, point id); a second write to a pending key only bumps its version, so ten
 * updates of a chunk before the relay runs cost one Qdrant write. A write to a dead key
 * makes it pending again: the new state deserves a new attempt. Takes any driver (the public
 * enqueueSync is this function): the statement is text with `$n` placeholders, one SQL path.
 */
export async function enqueuePointChanges(tx: Queryable | CommonQueryMethods, collection: string, pointIds: readonly PointId[], caller = "enqueuePointChanges"): Promise<void> {
  if (pointIds.length === 0) return;
  const ids = [...new Set(pointIds.map(pointIdText))];
  await runStatement(tx, ENQUEUE_POINT_CHANGES, [collection, JSON.stringify(ids)], caller);
}

export const ClaimedChange = z.object({
  id: z.coerce.string(),
  collection: z.string(),
  point_id: z.string(),
  version: z.coerce.string(),
  attempts: z.number(),
  /** The claim's version stamp (see claimChanges); a JSON number in the point's payload. */
  stamp: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER),
});
export type ClaimedChange = z.infer<typeof ClaimedChange>;

/**
 * Where version stamps come from: the outbox's own id sequence, global and monotonic (pg_dump
 * restores it); taking values from it only leaves gaps in row ids.
 */
const STAMP_SEQUENCE = sql.fragment`pg_get_serial_sequence('outbox', 'id')`;

/**
 * Leases up to `limit` due changes of the given collections to one relay. SKIP LOCKED lets any
 * number of relays claim at once without waiting on each other; the lease keeps the key theirs
 * while the Qdrant call is in flight, with no transaction held open. Collections the relay has
 * no sync for are never claimed: another relay may know them.
 *
 * Each claimed change gets a version stamp, a value of a global sequence taken while the
 * claim holds the row's lock: a later claim of the same key, even after the row was
 * acknowledged and written again, gets a greater one, and loads a state at least as new. The
 * relay writes the stamp into the point and Qdrant refuses to let a smaller stamp overwrite a
 * greater one, so a write that lands late (a lease that expired in flight, replicas applying
 * writes out of order) cannot bring back an older state.
 */
export function claimChanges(db: CommonQueryMethods, relayId: string, collections: readonly string[], limit: number, leaseMs: number) {
  return db.any(claimStatement(relayId, collections, limit, leaseMs));
}

/**
 * The claim, for claimChanges and for the test of its plan. Each collection's due changes are
 * read in the order of its claim index (outbox_claim_idx), `limit` at most, and the earliest of
 * them leased: the cost is the batch's, whatever the backlog. One scan ordered across
 * `collection = any(...)` cannot come from that index: it read and sorted every pending row (10
 * ms at a backlog of 20,000, 60-77 ms at 200,000; now 3-6 ms at both). The rows are locked as
 * they are read (SKIP LOCKED), so a relay claiming at the same moment reads past them to the
 * next ones instead of finding the same few taken; with several collections up to `limit` per
 * collection are locked for one batch, and those not leased are free again when the claim's
 * transaction ends (the relay claims outside one, so at the end of the statement).
 */
export function claimStatement(relayId: string, collections: readonly string[], limit: number, leaseMs: number) {
  return sql.type(ClaimedChange)`
    with candidates as (
      select due.id, due.next_attempt_at
      from unnest(${sql.array([...collections], "text")}) as served (collection)
      cross join lateral (
        select id, next_attempt_at from outbox
        where collection = served.collection and state = 'pending' and next_attempt_at <= now()
          and (leased_until is null or leased_until < now())
        order by next_attempt_at
        limit ${limit}
        for update skip locked
      ) as due
    )
    update outbox set leased_by = ${relayId}, leased_until = now() + make_interval(secs => ${leaseMs / 1000})
    where id = any (array(select id from candidates order by next_attempt_at limit ${limit}))
    returning id, collection, point_id, version, attempts, nextval(${STAMP_SEQUENCE}) as stamp
  `;
}

export interface Acknowledgement {
  /** Rows removed: their version was the one synced. */
  acknowledged: number;
  /**
   * Changes whose row was no longer this relay's (its lease expired and another relay took
   * or acknowledged it): the write may have landed after that relay's.
   */
  lost: ClaimedChange[];
}

/**
 * Removes the rows whose version is still the one synced; a row written meanwhile stays,
 * its lease dropped so the next pass syncs the newer state.
 */
export async function acknowledge(db: CommonQueryMethods, relayId: string, changes: readonly ClaimedChange[]): Promise<Acknowledgement> {
  if (changes.length === 0) return { acknowledged: 0, lost: [] };
  const ids = sql.array(changes.map((change) => change.id), "int8");
  const versions = sql.array(changes.map((change) => change.version), "int8");
  const deleted = await db.anyFirst(sql.type(z.object({ id: z.coerce.string() }))`
    delete from outbox o using unnest(${ids}, ${versions}) as synced (id, version)
    where o.id = synced.id and o.version = synced.version and o.leased_by = ${relayId}
    returning o.id
  `);
  if (deleted.length === changes.length) return { acknowledged: deleted.length, lost: [] };
  const kept = await db.anyFirst(sql.type(z.object({ id: z.coerce.string() }))`
    update outbox set leased_by = null, leased_until = null
    where id = any(${ids}) and leased_by = ${relayId}
    returning id
  `);
  const settled = new Set([...deleted, ...kept]);
  return { acknowledged: deleted.length, lost: changes.filter((change) => !settled.has(change.id)) };
}

/** A transient failure: try again after `delayMs` (backoff with jitter, or Retry-After). */
export async function scheduleRetry(
  db: CommonQueryMethods,
  relayId: string,
  changes: readonly ClaimedChange[],
  delayMs: number,
  error: string,
): Promise<void> {
  if (changes.length === 0) return;
  await db.query(sql.unsafe`
    update outbox set
      attempts = attempts + 1,
      next_attempt_at = now() + make_interval(secs => ${delayMs / 1000}),
      last_error = ${error},
      leased_by = null, leased_until = null, updated_at = now()
    where id = any(${sql.array(changes.map((change) => change.id), "int8")}) and leased_by = ${relayId}
  `);
}

/**
 * A permanent failure: the row stays, dead, with its reason, until `pgconverge outbox retry`.
 * A change written while the sync was in flight is not dead: it stays pending.
 */
export async function markDead(db: CommonQueryMethods, relayId: string, change: ClaimedChange, error: string): Promise<void> {
  await db.query(sql.unsafe`
    update outbox set
      state = case when version = ${change.version} then 'dead' else 'pending' end,
      dead_at = case when version = ${change.version} then now() end,
      attempts = attempts + 1,
      last_error = ${error},
      leased_by = null, leased_until = null, updated_at = now()
    where id = ${change.id} and leased_by = ${relayId}
  `);
}

/** Puts dead changes back in line (the given ids, or all; optionally one collection's only); returns the ids it put back. */
export async function retryDead(db: CommonQueryMethods, ids?: readonly string[], collection?: string): Promise<readonly string[]> {
  return db.anyFirst(sql.type(z.object({ id: z.coerce.string() }))`
    update outbox set state = 'pending', dead_at = null, attempts = 0, next_attempt_at = now(), updated_at = now()
    where state = 'dead' ${ids ? sql.fragment`and id = any(${sql.array([...ids], "int8")})` : sql.fragment``}
      ${collection === undefined ? sql.fragment`` : sql.fragment`and collection = ${collection}`}
    returning id
  `);
}

/** Milliseconds until the next change of these collections falls due (a retry or a lease ending); null if none is pending. */
export function nextDueInMs(db: CommonQueryMethods, collections: readonly string[]): Promise<number | null> {
  return db.oneFirst(sql.type(z.object({ ms: z.number().nullable() }))`
    select extract(epoch from min(greatest(next_attempt_at, coalesce(leased_until, next_attempt_at))) - now()) * 1000 as ms
    from outbox where collection = any(${sql.array([...collections], "text")}) and state = 'pending'
  `);
}

/**
 * Gives pending changes of collections that no sync of this relay declares a reason to show
 * (`outbox list`), without touching their state: they stay pending, for a relay that knows
 * the collection. Returns the collections concerned.
 */
export function flagUndeclared(db: CommonQueryMethods, declared: readonly string[], relayId: string): Promise<readonly string[]> {
  return db.anyFirst(sql.type(z.object({ collection: z.string() }))`
    with flagged as (
      update outbox set last_error = format('no sync declares collection %s (relay %s knows %s); the change waits for a relay that does', collection, ${relayId}::text, ${declared.join(", ") || "none"}::text)
      where state = 'pending' and last_error is null and not (collection = any(${sql.array([...declared], "text")}))
      returning collection
    )
    select distinct collection from flagged order by collection
  `);
}

/** Keys of a collection whose change is already pending: in flight, not drift. */
export async function pendingKeys(db: CommonQueryMethods, collection: string, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set();
  const pending = await db.anyFirst(sql.type(z.object({ point_id: z.string() }))`
    select point_id from outbox
    where collection = ${collection} and state = 'pending' and point_id = any(${sql.array([...ids], "text")})
  `);
  return new Set(pending);
}

/**
 * Moves the stamp sequence past `stamp` when Qdrant holds a point with a stamp this database
 * never issued (it was restored to an earlier point in time, Qdrant was not): without it every
 * later write of that point would be refused as older. Returns whether it moved. (Values taken
 * between the check and setval inside this one statement could be issued again; that needs a
 * restored database and a concurrent claim of the same key in the same microseconds.)
 */
export async function advanceStamps(db: CommonQueryMethods, stamp: number): Promise<boolean> {
  const moved = await db.maybeOne(sql.type(z.object({ moved: z.coerce.number() }))`
    select setval(seq, ${stamp}) as moved
    from (select ${STAMP_SEQUENCE}::regclass as seq) as stamps
    where coalesce(pg_sequence_last_value(seq), 0) < ${stamp}
  `);
  return moved !== null;
}

/** The database clock (like finished_at's default), ISO 8601 in UTC. */
export async function databaseNow(db: CommonQueryMethods): Promise<string> {
  const now = await db.oneFirst(sql.type(z.object({ now: z.coerce.date() }))`select clock_timestamp() as now`);
  return now.toISOString();
}

/** The id this database stamps into every point it writes (qdrant_owner). */
export function readOwner(db: CommonQueryMethods): Promise<string> {
  return db.oneFirst(sql.type(z.object({ owner_id: z.string() }))`select owner_id from qdrant_owner`);
}

export interface ReconcileRun {
  collection: string;
  startedAt: string;
  qdrantPoints: number;
  postgresPoints: number;
  missing: number;
  extra: number;
  stale: number;
  unowned: number;
  repaired: boolean;
}

/** Records a run, so `status` can show the drift found last. */
export async function recordReconcileRun(db: CommonQueryMethods, run: ReconcileRun): Promise<void> {
  await db.query(sql.unsafe`
    insert into reconcile_runs (collection, started_at, qdrant_points, postgres_points, missing, extra, stale, unowned, repaired)
    values (${run.collection}, ${run.startedAt}, ${run.qdrantPoints}, ${run.postgresPoints},
            ${run.missing}, ${run.extra}, ${run.stale}, ${run.unowned}, ${run.repaired})
  `);
}

export const OutboxRow = z.object({
  id: z.coerce.string(),
  collection: z.string(),
  point_id: z.string(),
  state: z.string(),
  version: z.coerce.number(),
  attempts: z.number(),
  age_s: z.number(),
  next_attempt_in_s: z.number().nullable(),
  last_error: z.string().nullable(),
});
export type OutboxRow = z.infer<typeof OutboxRow>;

/** The changes not yet in Qdrant, dead first, then oldest first; optionally only dead ones or one collection's. */
export function listChanges(db: CommonQueryMethods, options: { dead: boolean; limit: number; collection?: string | undefined }) {
  const conditions = [
    ...(options.dead ? [sql.fragment`state = 'dead'`] : []),
    ...(options.collection === undefined ? [] : [sql.fragment`collection = ${options.collection}`]),
  ];
  return db.any(sql.type(OutboxRow)`
    select id, collection, point_id, state, version, attempts,
           extract(epoch from now() - created_at)::float8 as age_s,
           case when state = 'pending' then extract(epoch from next_attempt_at - now())::float8 end as next_attempt_in_s,
           last_error
    from outbox
    ${conditions.length > 0 ? sql.fragment`where ${sql.join(conditions, sql.fragment` and `)}` : sql.fragment``}
    order by (state = 'dead') desc, created_at
    limit ${options.limit}
  `);
}
