import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";

/**
 * The outbox write API: call it inside the transaction that changes the data. One row per
 * (collection, point id); a second write to a pending key only bumps its version, so ten
 * updates of a chunk before the relay runs cost one Qdrant write. A write to a dead key
 * makes it pending again: the new state deserves a new attempt.
 */
export async function enqueuePointChanges(tx: CommonQueryMethods, collection: string, pointIds: readonly string[]): Promise<void> {
  if (pointIds.length === 0) return;
  await tx.query(sql.unsafe`
    insert into outbox (collection, point_id)
    select ${collection}, id from unnest(${sql.array([...new Set(pointIds)], "uuid")}) as id
    on conflict (collection, point_id) do update set
      version = outbox.version + 1,
      state = 'pending',
      attempts = 0,
      next_attempt_at = now(),
      last_error = null,
      dead_at = null,
      created_at = case when outbox.state = 'dead' then now() else outbox.created_at end,
      updated_at = now()
  `);
}

export const ClaimedChange = z.object({
  id: z.coerce.string(),
  point_id: z.string(),
  version: z.coerce.string(),
  attempts: z.number(),
});
export type ClaimedChange = z.infer<typeof ClaimedChange>;

/**
 * Leases up to `limit` due changes of a collection to one relay. SKIP LOCKED lets any number
 * of relays claim at once without waiting on each other; the lease keeps the key theirs
 * while the Qdrant call is in flight, with no transaction held open.
 */
export function claimChanges(db: CommonQueryMethods, relayId: string, collection: string, limit: number, leaseMs: number) {
  return db.any(sql.type(ClaimedChange)`
    update outbox set leased_by = ${relayId}, leased_until = now() + make_interval(secs => ${leaseMs / 1000})
    where id in (
      select id from outbox
      where collection = ${collection} and state = 'pending' and next_attempt_at <= now()
        and (leased_until is null or leased_until < now())
      order by next_attempt_at
      limit ${limit}
      for update skip locked
    )
    returning id, point_id, version, attempts
  `);
}

/**
 * Removes the rows whose version is still the one synced; a row written meanwhile stays,
 * its lease dropped so the next pass syncs the newer state.
 */
export async function acknowledge(db: CommonQueryMethods, relayId: string, changes: readonly ClaimedChange[]): Promise<number> {
  if (changes.length === 0) return 0;
  const ids = sql.array(changes.map((change) => change.id), "int8");
  const versions = sql.array(changes.map((change) => change.version), "int8");
  const deleted = await db.query(sql.unsafe`
    delete from outbox o using unnest(${ids}, ${versions}) as synced (id, version)
    where o.id = synced.id and o.version = synced.version and o.leased_by = ${relayId}
  `);
  if (deleted.rowCount < changes.length) {
    await db.query(sql.unsafe`
      update outbox set leased_by = null, leased_until = null
      where id = any(${ids}) and leased_by = ${relayId}
    `);
  }
  return deleted.rowCount;
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

/** Puts dead changes back in line (all, or these ids); returns the ids it put back. */
export async function retryDead(db: CommonQueryMethods, ids?: readonly string[]): Promise<readonly string[]> {
  return db.anyFirst(sql.type(z.object({ id: z.coerce.string() }))`
    update outbox set state = 'pending', dead_at = null, attempts = 0, next_attempt_at = now(), updated_at = now()
    where state = 'dead' ${ids ? sql.fragment`and id = any(${sql.array([...ids], "int8")})` : sql.fragment``}
    returning id
  `);
}
