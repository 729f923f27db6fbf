import type { Job } from "graphile-worker";
import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";
import { MIN_PARK_MS } from "../runtime/graphileJobs.ts";
import type { FlowLimit } from "./options.ts";

/**
 * The runtime SQL of flow control (tables of sql/000005_flow_limits.sql). Every statement that
 * changes a limit's in_use locks the limit rows it touches in id order, so admissions, releases
 * and sweeps never wait on each other in a cycle.
 */

const LimitRow = z.object({ id: z.number(), kind: z.enum(["task", "queue"]), name: z.string(), previous: z.number().nullable() });

/**
 * Writes these limits (a worker's configuration, at its start): the latest write wins. A limit
 * lowered below the slots in use now comes down as they are freed (lowering_to). Returns each
 * limit's id and its size before (null: new).
 */
export function upsertLimits(db: CommonQueryMethods, limits: readonly FlowLimit[]) {
  return db.any(sql.type(LimitRow)`
    with given as (
      select * from ${sql.unnest(limits.map((limit) => [limit.kind, limit.name, limit.maxRunning]), ["text", "text", "int4"])} as given (kind, name, max_running)
    ), before as (
      select kind, name, coalesce(lowering_to, max_running) as max_running from flow_limits where (kind, name) in (select kind, name from given)
    ), written as (
      insert into flow_limits (kind, name, max_running)
      select kind, name, max_running from given order by kind, name
      on conflict (kind, name) do update set
        max_running = greatest(excluded.max_running, flow_limits.in_use),
        lowering_to = case when excluded.max_running < flow_limits.in_use then excluded.max_running end,
        updated_at = now()
      returning id, kind, name
    )
    select written.id, written.kind, written.name, before.max_running as previous
    from written left join before using (kind, name)
  `);
}

/**
 * The fast path of admission to one limit, one statement on its own (no transaction around it,
 * so the limit's row is locked only while it runs: every job of the limit passes through that
 * row): a guarded update takes a slot if one is free and records it. Concurrent updates of the
 * row are rechecked against its latest version, so the guard holds. Returns whether it took
 * the slot; if not, takeSlots decides under the lock (the job may have to wait).
 */
export async function takeFreeSlot(db: CommonQueryMethods, limitId: number, job: Job): Promise<boolean> {
  return db.oneFirst(sql.type(z.object({ taken: z.boolean() }))`
    with taken as (
      update flow_limits set in_use = in_use + 1 where id = ${limitId} and in_use < max_running returning id
    ), slot as (
      insert into flow_slots (limit_id, job_id, revision, locked_by) select id, ${job.id}, ${job.revision}, ${job.locked_by!} from taken
    ), unwaited as (
      delete from flow_waiters where job_id = ${job.id} and exists (select 1 from taken)
    )
    select exists (select 1 from taken) as taken
  `);
}

/**
 * Locks these limits' rows, in id order, for the rest of the caller's transaction: a statement
 * of its own, so that the next statement's snapshot is taken with the locks held and sees the
 * rows as their last holder left them.
 */
export async function lockLimits(tx: CommonQueryMethods, limitIds: readonly number[]): Promise<void> {
  await tx.query(sql.unsafe`select id from flow_limits where id = any(${sql.array([...limitIds], "int4")}) order by id for update`);
}

/**
 * Admission, in the caller's transaction: locks the job's limits (id order); then, if every one
 * has a free slot, takes one of each (a guarded update: in_use < max_running, and the CHECK
 * besides) and records the slots, dropping any waiter rows of the job; otherwise records the
 * job as waiting on each full limit and takes nothing. Returns whether the slots were taken.
 * Two statements, so that the decision is made on a snapshot taken with the locks held: done
 * in one statement (a sorting FOR UPDATE in a CTE, the update joined to it), the three-worker
 * test saw 5 to 8 jobs running under a limit of 4 in 3 runs of 10, for a reason not pinned down
 * (a single waiting admission, test/flow/concurrency-limits.test.ts, did not reproduce it).
 */
export async function takeSlots(tx: CommonQueryMethods, limitIds: readonly number[], job: Job): Promise<boolean> {
  await lockLimits(tx, limitIds);
  const { admitted, taken } = await tx.one(sql.type(z.object({ admitted: z.boolean(), taken: z.number() }))`
    with locked as (
      select id, in_use < max_running as free from flow_limits where id = any(${sql.array([...limitIds], "int4")})
    ), verdict as (
      select coalesce(bool_and(free), false) as admitted from locked
    ), taken as (
      update flow_limits set in_use = in_use + 1
      from locked, verdict
      where flow_limits.id = locked.id and verdict.admitted and flow_limits.in_use < flow_limits.max_running
      returning flow_limits.id
    ), slots as (
      insert into flow_slots (limit_id, job_id, revision, locked_by)
      select id, ${job.id}, ${job.revision}, ${job.locked_by!} from taken
    ), unwaited as (
      delete from flow_waiters where job_id = ${job.id} and (select admitted from verdict)
    ), waiting as (
      insert into flow_waiters (limit_id, job_id)
      select locked.id, ${job.id} from locked, verdict where not verdict.admitted and not locked.free
      on conflict do nothing
    )
    select admitted, (select count(*)::int from taken) as taken from verdict
  `);
  // Admitted means a slot of every limit taken; anything else must not run (the caller's transaction rolls back).
  if (admitted && taken !== limitIds.length) throw new Error(`flow control: job ${job.id} was admitted but took ${taken} of its ${limitIds.length} slots`);
  return admitted;
}

/**
 * The SET of an update of flow_limits that gives back `counts.n` slots of each limit: in_use
 * comes down, and a limit being lowered (lowering_to) comes down with it, never below in_use.
 * Every path that frees slots (release, sweep, a stale slot) uses it.
 */
const RELEASE_COUNTS = sql.fragment`
  in_use = in_use - counts.n,
  max_running = case when lowering_to is null then max_running else greatest(lowering_to, in_use - counts.n) end,
  lowering_to = case when lowering_to < in_use - counts.n then lowering_to end`;

/**
 * Frees every slot this job holds under this lock holder (the limits locked first, in id order):
 * slots left by an earlier run of the job whose release failed, which the sweeper cannot tell
 * from a live one while the same holder runs the job again.
 */
export async function dropOwnSlots(tx: CommonQueryMethods, job: Job): Promise<void> {
  await tx.query(sql.unsafe`
    select id from flow_limits
    where id in (select limit_id from flow_slots where job_id = ${job.id} and locked_by = ${job.locked_by!})
    order by id for update
  `);
  await tx.query(sql.unsafe`
    with dropped as (
      delete from flow_slots where job_id = ${job.id} and locked_by = ${job.locked_by!} returning limit_id
    )
    update flow_limits set ${RELEASE_COUNTS}
    from (select limit_id, count(*)::int as n from dropped group by limit_id) as counts
    where flow_limits.id = counts.limit_id
  `);
}

/**
 * Waiters are woken only once they have been waiting this long, ms: what parkJob gives
 * graphile-worker to record the parked run (see MIN_PARK_MS). A waiter passed over for it is
 * woken by the next release or the next sweep.
 */
export const WAKE_AFTER_PARK_MS = MIN_PARK_MS;

/**
 * Frees the slots this execution of the job holds and, in the same statement, under the
 * limits' row locks, takes the oldest waiters of each limit (parked WAKE_AFTER_PARK_MS ago or
 * more), as many as it has free slots, off the waiting list. Returns the job ids to wake, which
 * the caller must wake (wakeJobs) in the same transaction: a waiter taken off the list and not
 * woken would sleep to its park timeout.
 */
export async function freeSlots(tx: CommonQueryMethods, limitIds: readonly number[], job: Job): Promise<string[]> {
  const rows = await tx.any(sql.type(z.object({ job_id: z.coerce.string() }))`
    with locked as (
      select id from flow_limits where id = any(${sql.array([...limitIds], "int4")}) order by id for update
    ), freed as (
      delete from flow_slots
      where job_id = ${job.id} and locked_by = ${job.locked_by!} and limit_id = any(${sql.array([...limitIds], "int4")})
      returning limit_id
    ), released as (
      update flow_limits
      set ${RELEASE_COUNTS}
      from (select limit_id, count(*)::int as n from freed group by limit_id) as counts, locked
      where flow_limits.id = counts.limit_id and locked.id = counts.limit_id
      returning flow_limits.id, flow_limits.max_running - flow_limits.in_use as free
    ), woken as (
      delete from flow_waiters
      where (limit_id, job_id) in (
        select released.id, oldest.job_id from released
        cross join lateral (
          select job_id from flow_waiters
          where limit_id = released.id and since <= now() - make_interval(secs => ${WAKE_AFTER_PARK_MS / 1000})
          order by since, job_id limit released.free
        ) as oldest
      )
      returning job_id
    )
    select distinct job_id from woken
  `);
  return rows.map((row) => row.job_id);
}

/**
 * The sweep's part: frees slots whose holder no longer holds the job (its worker died and the
 * job was released, or the job finished or was taken over elsewhere), read through
 * graphile-worker's public jobs view. A slot taken by a transaction not yet committed is not
 * seen; its job is locked by its holder, so it is never freed by mistake. Returns how many.
 */
export async function freeStaleSlots(tx: CommonQueryMethods): Promise<number> {
  return tx.oneFirst(sql.type(z.object({ freed: z.number() }))`
    with stale as (
      select slots.limit_id, slots.job_id, slots.locked_by from flow_slots as slots
      where not exists (
        select 1 from graphile_worker.jobs as jobs where jobs.id = slots.job_id and jobs.locked_by = slots.locked_by
      )
    ), locked as (
      select id from flow_limits where id in (select limit_id from stale) order by id for update
    ), freed as (
      delete from flow_slots using stale, locked
      where flow_slots.limit_id = locked.id and (flow_slots.limit_id, flow_slots.job_id, flow_slots.locked_by) = (stale.limit_id, stale.job_id, stale.locked_by)
      returning flow_slots.limit_id
    ), released as (
      update flow_limits
      set ${RELEASE_COUNTS}
      from (select limit_id, count(*)::int as n from freed group by limit_id) as counts
      where flow_limits.id = counts.limit_id
      returning counts.n
    )
    select coalesce(sum(n), 0)::int as freed from released
  `);
}

/**
 * The safety net for a lost wake (a release whose transaction failed after its job ended, a
 * waiter parked across a limit raised meanwhile, one passed over for WAKE_AFTER_PARK_MS):
 * takes, off the waiting list, the oldest waiters of every limit with free slots, as many as it has. Limits locked by a release right
 * now are skipped: that release wakes their waiters.
 */
export async function takeWaitersOfFreeLimits(tx: CommonQueryMethods): Promise<string[]> {
  const rows = await tx.any(sql.type(z.object({ job_id: z.coerce.string() }))`
    with free as (
      select id, max_running - in_use as free from flow_limits
      where in_use < max_running and exists (select 1 from flow_waiters where limit_id = flow_limits.id)
      order by id for update skip locked
    ), woken as (
      delete from flow_waiters
      where (limit_id, job_id) in (
        select free.id, oldest.job_id from free
        cross join lateral (
          select job_id from flow_waiters
          where limit_id = free.id and since <= now() - make_interval(secs => ${WAKE_AFTER_PARK_MS / 1000})
          order by since, job_id limit free.free
        ) as oldest
      )
      returning job_id
    )
    select distinct job_id from woken
  `);
  return rows.map((row) => row.job_id);
}
