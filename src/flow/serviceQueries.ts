import { sql, type CommonQueryMethods } from "slonik";
import { z } from "zod";

/** The SQL of flow_services (sql/000007, sql/000008), one statement per function. */

/** Gives up the probe lease, all of it (sql/000008 keeps its columns null together). */
const NO_PROBE = sql.fragment`probe_holder = null, probe_until = null, probe_job_id = null, probe_locked_by = null`;

/**
 * Makes sure the service has a row. With `rate` given (configured in this worker) the row takes
 * its rate and burst: the last worker started wins, so a fleet should agree on them. Without,
 * an existing row is left as it is and a new one has no rate limit.
 */
export async function ensureService(db: CommonQueryMethods, name: string, limit: { rate: number | null; burst: number } | null): Promise<void> {
  if (limit === null) {
    await db.query(sql.unsafe`insert into flow_services (name) values (${name}) on conflict (name) do nothing`);
    return;
  }
  await db.query(sql.unsafe`
    insert into flow_services (name, rate, burst) values (${name}, ${limit.rate}, ${limit.burst})
    on conflict (name) do update set rate = excluded.rate, burst = excluded.burst
  `);
}

/**
 * What admit decided for one call:
 * - go: call at `turn` (now, or within maxSleepMs: the turn is reserved, sleep until it);
 * - probe: the circuit was open or half-open with no live probe; this call is the probe (lease taken);
 * - later: the rate limit's next turn is beyond maxSleepMs (not reserved: defer to about `turn`);
 * - paused: a 429 paused the fleet until paused_until;
 * - open: the circuit is open until reopen_at;
 * - probing: another call is the probe, until probe_until at most.
 */
export const Admission = z.object({
  verdict: z.enum(["go", "probe", "later", "paused", "open", "probing"]),
  now: z.coerce.date(),
  turn: z.coerce.date(),
  paused_until: z.coerce.date().nullable(),
  reopen_at: z.coerce.date().nullable(),
  probe_until: z.coerce.date().nullable(),
  consecutive_failures: z.number(),
  rate: z.number().nullable(),
});
export type Admission = z.infer<typeof Admission>;

/**
 * Decides one call under the service's row lock, in one statement: the breaker first (open, or
 * a probe in flight, defers; an open circuit past reopen_at makes this call the probe), then
 * the fleet's 429 pause, then the rate limit. The clock is clock_timestamp(), read after the
 * lock is held (now() is the transaction's start, the same for every statement of it). A turn
 * is reserved (next_free_at moved on by cost/rate) only when the call will go within
 * maxSleepMs: a deferred job may come back late, and a turn reserved for it would be lost.
 * A probe's lease names the call's job and its lock holder, for freeStaleProbes.
 */
export async function admit(
  db: CommonQueryMethods,
  call: { name: string; cost: number; maxSleepMs: number; holder: string; leaseMs: number; job: { id: string; lockedBy: string } },
): Promise<Admission> {
  return db.one(sql.type(Admission)`
    with locked as (
      select * from flow_services where name = ${call.name} for update
    ), seen as (
      select locked.*, clock_timestamp() as now from locked
    ), timed as (
      select seen.*,
        case when rate is null then now else greatest(now, next_free_at - burst / rate * interval '1 second') end as turn
      from seen
    ), decided as (
      select timed.*,
        case
          when state = 'open' and reopen_at > now then 'open'
          when state = 'half_open' and probe_until > now then 'probing'
          when state <> 'closed' then 'probe'
          when paused_until > now then 'paused'
          when turn <= now + ${call.maxSleepMs}::float8 * interval '1 millisecond' then 'go'
          else 'later'
        end as verdict
      from timed
    ), moved as (
      update flow_services as service set
        next_free_at = case when decided.verdict = 'go' then greatest(decided.next_free_at, decided.now) + ${call.cost}::float8 / decided.rate * interval '1 second' else service.next_free_at end,
        throttled_seconds = service.throttled_seconds + case when decided.verdict = 'go' then extract(epoch from decided.turn - decided.now)::float8 else 0 end,
        state = case when decided.verdict = 'probe' then 'half_open' else service.state end,
        state_since = case when decided.verdict = 'probe' and service.state = 'open' then decided.now else service.state_since end,
        reopen_at = case when decided.verdict = 'probe' then null else service.reopen_at end,
        probe_holder = case when decided.verdict = 'probe' then ${call.holder} else service.probe_holder end,
        probe_until = case when decided.verdict = 'probe' then decided.now + ${call.leaseMs}::float8 * interval '1 millisecond' else service.probe_until end,
        probe_job_id = case when decided.verdict = 'probe' then ${call.job.id}::bigint else service.probe_job_id end,
        probe_locked_by = case when decided.verdict = 'probe' then ${call.job.lockedBy} else service.probe_locked_by end
      from decided
      where service.name = decided.name and (decided.verdict = 'probe' or (decided.verdict = 'go' and decided.rate is not null))
      returning service.name
    )
    select verdict, now, turn, paused_until, reopen_at, probe_until, consecutive_failures, rate,
      (select count(*) from moved) as moved
    from decided
  `);
}

/**
 * The run time of a job deferred because of the service, not before `notBefore`: the service's
 * waiting line (resume_at) moves on by `spacingMs` per deferred job, so jobs released together
 * (a circuit closing, a pause ending) come back one after another. The wait is added to
 * throttled_seconds.
 */
export async function deferUntil(db: CommonQueryMethods, name: string, notBefore: Date, spacingMs: number): Promise<Date> {
  return db.oneFirst(sql.type(z.object({ resume_at: z.coerce.date() }))`
    update flow_services set
      resume_at = greatest(resume_at + ${spacingMs}::float8 * interval '1 millisecond', ${notBefore.toISOString()}::timestamptz, clock_timestamp()),
      throttled_seconds = throttled_seconds + greatest(extract(epoch from greatest(resume_at + ${spacingMs}::float8 * interval '1 millisecond', ${notBefore.toISOString()}::timestamptz) - clock_timestamp())::float8, 0)
    where name = ${name}
    returning resume_at
  `);
}

/**
 * The service answered: the failure count starts again, and a half-open circuit whose probe
 * this was closes. A success of a call that was let through before the circuit opened does not
 * close it (only the probe may). Returns whether this closed the circuit.
 */
export async function recordSuccess(db: CommonQueryMethods, name: string, holder: string): Promise<boolean> {
  const row = await db.maybeOne(sql.type(z.object({ closed: z.boolean() }))`
    with locked as (
      select name, state = 'half_open' and probe_holder = ${holder} as closes, clock_timestamp() as now
      from flow_services
      where name = ${name} and ((state = 'closed' and consecutive_failures > 0) or (state = 'half_open' and probe_holder = ${holder}))
      for update
    )
    update flow_services as service set
      consecutive_failures = 0,
      state = case when locked.closes then 'closed' else service.state end,
      state_since = case when locked.closes then locked.now else service.state_since end,
      opened_at = case when locked.closes then null else service.opened_at end,
      probe_holder = case when locked.closes then null else service.probe_holder end,
      probe_until = case when locked.closes then null else service.probe_until end,
      probe_job_id = case when locked.closes then null else service.probe_job_id end,
      probe_locked_by = case when locked.closes then null else service.probe_locked_by end
    from locked
    where service.name = locked.name
    returning locked.closes as closed
  `);
  return row?.closed ?? false;
}

export const FailureOutcome = z.object({
  state: z.enum(["closed", "open", "half_open"]),
  reopen_at: z.coerce.date().nullable(),
  probe_until: z.coerce.date().nullable(),
  opened: z.boolean(),
});
export type FailureOutcome = z.infer<typeof FailureOutcome>;

/**
 * Counts a breaker-worthy failure (connection refused, 5xx, timeout). The circuit opens for
 * openMs when this was the probe, or when a closed circuit reaches `threshold` consecutive
 * failures. Returns the state after it (an open circuit defers the caller instead of failing it).
 */
export async function recordFailure(
  db: CommonQueryMethods,
  name: string,
  failure: { holder: string; error: string; threshold: number; openMs: number },
): Promise<FailureOutcome> {
  const { holder, error, threshold, openMs } = failure;
  return db.one(sql.type(FailureOutcome)`
    with locked as (
      select name, state, probe_holder, consecutive_failures, clock_timestamp() as now from flow_services where name = ${name} for update
    ), decided as (
      select locked.*,
        (state = 'half_open' and probe_holder = ${holder}) or (state = 'closed' and consecutive_failures + 1 >= ${threshold}::int) as opens
      from locked
    ), updated as (
      update flow_services as service set
        consecutive_failures = service.consecutive_failures + 1,
        last_error = ${error.slice(0, 500)},
        state = case when decided.opens then 'open' else service.state end,
        state_since = case when decided.opens then decided.now else service.state_since end,
        opened_at = case when decided.opens then coalesce(service.opened_at, decided.now) else service.opened_at end,
        reopen_at = case when decided.opens then decided.now + ${openMs}::float8 * interval '1 millisecond' else service.reopen_at end,
        probe_holder = case when decided.opens then null else service.probe_holder end,
        probe_until = case when decided.opens then null else service.probe_until end,
        probe_job_id = case when decided.opens then null else service.probe_job_id end,
        probe_locked_by = case when decided.opens then null else service.probe_locked_by end
      from decided
      where service.name = decided.name
      returning service.state, service.reopen_at, service.probe_until, decided.opens as opened
    )
    select * from updated
  `);
}

/** Fleet-wide pause after a 429: nothing is sent to the service before now + ms (a longer pause already set stays). */
export async function pauseService(db: CommonQueryMethods, name: string, ms: number): Promise<Date> {
  return db.oneFirst(sql.type(z.object({ paused_until: z.coerce.date() }))`
    update flow_services
    set paused_until = greatest(coalesce(paused_until, '-infinity'), clock_timestamp() + ${ms}::float8 * interval '1 millisecond')
    where name = ${name}
    returning paused_until
  `);
}

/** Gives up a probe lease without a verdict (the call was cancelled, or failed for a reason of its own). */
export async function releaseProbe(db: CommonQueryMethods, name: string, holder: string): Promise<void> {
  await db.query(sql.unsafe`
    update flow_services set ${NO_PROBE} where name = ${name} and probe_holder = ${holder}
  `);
}

/**
 * The sweep's part: gives up the probe leases whose job is no longer locked by the lock holder
 * that took them (the prober's worker died and its jobs were released, or the job ended without
 * its outcome recorded), read through graphile-worker's public jobs view as freeStaleSlots does.
 * So the next call may probe within the dead-worker threshold instead of at the lease's end.
 * A lease is taken while its job is locked, so a live prober's is never freed. Returns the
 * services whose lease was freed.
 */
export async function freeStaleProbes(tx: CommonQueryMethods): Promise<readonly string[]> {
  // The stale leases are chosen first and freed by holder: an update that waited for a row
  // re-checks its WHERE on the new row version but reads the jobs with its old snapshot, so a
  // lease taken meanwhile by a live prober (its job's lock not yet seen) would be freed too.
  return tx.anyFirst(sql.type(z.object({ name: z.string() }))`
    with stale as (
      select name, probe_holder from flow_services as service
      where probe_holder is not null and not exists (
        select 1 from graphile_worker.jobs as jobs where jobs.id = service.probe_job_id and jobs.locked_by = service.probe_locked_by
      )
    )
    update flow_services as service set ${NO_PROBE}
    from stale
    where service.name = stale.name and service.probe_holder = stale.probe_holder
    returning service.name
  `);
}

export const ServiceStatusRow = z.object({
  name: z.string(),
  rate: z.number().nullable(),
  state: z.enum(["closed", "open", "half_open"]),
  state_since: z.coerce.date(),
  consecutive_failures: z.number(),
  reopen_at: z.coerce.date().nullable(),
  paused_until: z.coerce.date().nullable(),
  probe_in_flight: z.boolean(),
  throttled_seconds: z.number(),
  last_error: z.string().nullable(),
});
export type ServiceStatusRow = z.infer<typeof ServiceStatusRow>;

/** Every service's state, as status and /metrics report it. */
export async function readServices(db: CommonQueryMethods): Promise<readonly ServiceStatusRow[]> {
  return db.any(sql.type(ServiceStatusRow)`
    select name, rate, state, state_since, consecutive_failures, reopen_at, paused_until, probe_in_flight, throttled_seconds, last_error
    from flow_services_status order by name
  `);
}
