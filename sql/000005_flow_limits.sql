-- Flow control: fleet-wide concurrency limits. A limit caps how many jobs of a task (kind
-- 'task'), or of a named group of tasks (kind 'queue'), run at once across every worker.
-- A job takes a slot before its prepare (a guarded update of in_use under the limit's row
-- lock) and frees it when it ends; a job that finds its limit full is recorded as waiting and
-- parked (no attempt counted, no connection held) until a release wakes it. Runtime SQL:
-- src/flow/queries.ts.

create table flow_limits (
  id integer generated always as identity primary key,
  kind text not null check (kind in ('task', 'queue')),
  name text not null check (name <> ''),
  max_running integer not null check (max_running > 0),
  in_use integer not null default 0,
  lowering_to integer,
  updated_at timestamptz not null default now(),
  unique (kind, name),
  check (in_use between 0 and max_running),
  -- A limit lowered below the jobs running under it keeps max_running at in_use and comes
  -- down to lowering_to as they finish, so in_use never exceeds max_running.
  check (lowering_to is null or (lowering_to > 0 and lowering_to < max_running))
);
comment on table flow_limits is 'Fleet-wide concurrency limits: at most max_running jobs of a task (kind task) or of a group of tasks (kind queue) run at once, whatever the number of workers. Written by each worker at start from its configuration (the latest start wins); read through flow_status.';
comment on column flow_limits.id is 'Surrogate key referenced by flow_slots and flow_waiters.';
comment on column flow_limits.kind is 'task: the limit of one task identifier; queue: a named limit shared by every task that declares flow.queue = name.';
comment on column flow_limits.name is 'The task identifier (kind task) or the flow queue name (kind queue).';
comment on column flow_limits.max_running is 'Most jobs running under this limit at once, fleet-wide.';
comment on column flow_limits.in_use is 'Slots taken now: the number of flow_slots rows of this limit (kept as a counter so that admission is one guarded update).';
comment on column flow_limits.lowering_to is 'When a limit was lowered below in_use: the new limit, reached as running jobs finish (max_running follows in_use down); null otherwise.';
comment on column flow_limits.updated_at is 'When a worker last wrote max_running (at its start).';

create table flow_slots (
  limit_id integer not null references flow_limits (id) on delete cascade,
  job_id bigint not null,
  revision integer not null check (revision >= 0),
  locked_by text not null check (locked_by <> ''),
  acquired_at timestamptz not null default now(),
  -- The lock holder is part of the key: a slot left by a dead worker and the slot of the
  -- worker that took its job over are two rows until the sweeper frees the first.
  primary key (job_id, limit_id, locked_by)
);
comment on table flow_slots is 'Slots held: one row per running job and limit it counts against. Freed when the job ends, or by the sweeper once its holder no longer holds the job (the worker died, the job finished or was taken over elsewhere).';
comment on column flow_slots.limit_id is 'The limit (flow_limits.id).';
comment on column flow_slots.job_id is 'graphile_worker job id.';
comment on column flow_slots.revision is 'graphile_worker job revision when the slot was taken.';
comment on column flow_slots.locked_by is 'graphile-worker lock holder id of the execution holding the slot (a worker or its pool, listed in workers.locker_ids).';
comment on column flow_slots.acquired_at is 'When the slot was taken.';
-- The sweep frees the slots of lock holders of dead workers.
create index flow_slots_locked_by_idx on flow_slots (locked_by);

create table flow_waiters (
  limit_id integer not null references flow_limits (id) on delete cascade,
  job_id bigint not null,
  -- The clock, not the transaction's start: a wake waits MIN_PARK_MS from the park itself.
  since timestamptz not null default clock_timestamp(),
  primary key (limit_id, job_id)
);
comment on table flow_waiters is 'Jobs parked because a limit was full, waiting to be woken (oldest first) when a slot of that limit is freed. A row leaves when its job is woken or admitted.';
comment on column flow_waiters.limit_id is 'The full limit (flow_limits.id).';
comment on column flow_waiters.job_id is 'graphile_worker job id of the parked job.';
comment on column flow_waiters.since is 'When the job found the limit full.';
-- The wake: the oldest waiters of one limit.
create index flow_waiters_wake_idx on flow_waiters (limit_id, since, job_id);
-- Admission removes a job's own waiter rows.
create index flow_waiters_job_id_idx on flow_waiters (job_id);

create view flow_status as
select limits.kind, limits.name, limits.max_running, limits.in_use,
       coalesce(waiting.jobs, 0)::integer as waiting, waiting.oldest_since as oldest_waiting_since
from flow_limits as limits
left join lateral (
  select count(*) as jobs, min(since) as oldest_since from flow_waiters where flow_waiters.limit_id = limits.id
) as waiting on true;
comment on view flow_status is 'Per fleet-wide limit: its size, the slots in use and the jobs waiting for one (read by pgconverge status and /metrics).';
comment on column flow_status.kind is 'task or queue (see flow_limits.kind).';
comment on column flow_status.name is 'Task identifier or flow queue name.';
comment on column flow_status.max_running is 'Most jobs running under the limit at once, fleet-wide.';
comment on column flow_status.in_use is 'Slots taken now.';
comment on column flow_status.waiting is 'Jobs parked until a slot is freed.';
comment on column flow_status.oldest_waiting_since is 'When the longest-waiting of them found the limit full; null when none waits.';
