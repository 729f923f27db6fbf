-- Views that answer the usual operating questions in psql without knowing graphile-worker's
-- internals (what is queued, what is stuck, what failed and why, who is alive), and a
-- read-only role for people who should look but not touch. `pgconverge status` reads the
-- same views, so psql and the CLI always agree.
--
-- Jobs are read through graphile_worker.jobs, graphile-worker's public view, not its
-- _private tables. (Should a future graphile-worker migration need to drop that view, ours
-- would block it: a loud failure at upgrade time, fixed by a migration here, never a silent one.)

-- The dead-worker threshold is runtime configuration (WORKER_DEAD_AFTER_MS), not schema, so
-- the views read it from a setting: `pgconverge status` sets it from its environment, psql
-- users may `set pgconverge.worker_dead_after_ms = 10000` (or `alter database ... set`), and
-- without either it is the worker's default, 15 s.
create function pgconverge_worker_dead_after_ms() returns bigint
language sql stable parallel safe as $$
  select case when s ~ '^[0-9]{1,12}$' then s::bigint else 15000 end
  from coalesce(current_setting('pgconverge.worker_dead_after_ms', true), '') as s
$$;
comment on function pgconverge_worker_dead_after_ms() is 'Heartbeat age (ms) after which worker_status calls a worker dead: the setting pgconverge.worker_dead_after_ms when it is a whole number, else 15000 (the default of WORKER_DEAD_AFTER_MS).';

create view job_list as
select
  jobs.id as job_id,
  jobs.task_identifier as task,
  jobs.queue_name,
  case
    when jobs.locked_at is not null then 'running'
    when jobs.attempts >= jobs.max_attempts then 'exhausted'
    when jobs.attempts > 0 then 'retrying'
    when jobs.run_at > now() then 'scheduled'
    else 'pending'
  end as state,
  jobs.attempts,
  jobs.max_attempts,
  jobs.run_at,
  jobs.priority,
  jobs.locked_by,
  jobs.locked_at,
  nullif(jobs.last_error, '') as last_error,
  jobs.key as job_key,
  jobs.created_at
from graphile_worker.jobs as jobs;
comment on view job_list is 'Every job still in the queue with a plain state; jobs that completed or were dead-lettered have left it (see dead_letter_list).';
comment on column job_list.job_id is 'graphile_worker job id.';
comment on column job_list.task is 'Task identifier.';
comment on column job_list.queue_name is 'Named queue the job runs in serially with the others of that name, or null.';
comment on column job_list.state is 'running: locked by a worker; exhausted: out of attempts, moved to dead_letters by the next sweep; retrying: failed before, runs again at run_at; scheduled: first attempt at a future run_at; pending: due now, waiting for a free worker (or for its named queue).';
comment on column job_list.attempts is 'Attempts started so far (a running job counts its current one).';
comment on column job_list.max_attempts is 'Attempt limit; after the last one the job is dead-lettered.';
comment on column job_list.run_at is 'When the job becomes (or became) due; after a failure, the time of the next attempt.';
comment on column job_list.priority is 'graphile-worker priority: lower runs first.';
comment on column job_list.locked_by is 'Lock holder id of the running worker (see worker_status and workers.locker_ids).';
comment on column job_list.locked_at is 'When the running attempt took the job (re-stamped by its worker''s heartbeat on long runs).';
comment on column job_list.last_error is 'Error of the latest failed attempt, if any.';
comment on column job_list.job_key is 'Deduplication key given at enqueue, if any.';
comment on column job_list.created_at is 'When the job was enqueued.';

create view job_counts as
select
  task,
  count(*) filter (where state = 'pending') as pending,
  count(*) filter (where state = 'scheduled') as scheduled,
  count(*) filter (where state = 'retrying') as retrying,
  count(*) filter (where state = 'running') as running,
  count(*) filter (where state = 'exhausted') as exhausted,
  count(*) filter (where state = 'dead') as dead,
  extract(epoch from now() - min(due_at) filter (where state = 'pending'))::float8 as oldest_pending_age_s
from (
  select task, state, run_at as due_at from job_list
  union all
  select task, 'dead', null from dead_letters
) as all_jobs
group by task;
comment on view job_counts is 'Jobs per task and state (the states of job_list, plus dead: rows in dead_letters); a task with no queued and no dead jobs has no row.';
comment on column job_counts.task is 'Task identifier.';
comment on column job_counts.pending is 'Due now, waiting for a worker.';
comment on column job_counts.scheduled is 'First attempt at a future run_at.';
comment on column job_counts.retrying is 'Failed before; next attempt at run_at.';
comment on column job_counts.running is 'Locked by a worker right now.';
comment on column job_counts.exhausted is 'Out of attempts; the sweeper moves them to dead_letters within seconds (a lasting count means no worker is sweeping).';
comment on column job_counts.dead is 'Dead letters of the task (`pgconverge dlq list`).';
comment on column job_counts.oldest_pending_age_s is 'Seconds the longest-waiting pending job has been due: queue lag. Null when none is pending.';

create view dead_letter_list as
select
  id,
  task,
  reason,
  attempts,
  max_attempts,
  last_error,
  dead_at,
  extract(epoch from now() - dead_at)::float8 as dead_for_s,
  first_failed_at,
  last_failed_at,
  queue_name,
  job_id,
  payload
from dead_letters
order by dead_at desc, id desc;
comment on view dead_letter_list is 'Dead letters, newest first, readable: why each job failed and when. Retry with `pgconverge dlq retry <id>`, drop with `pgconverge dlq discard <id>`.';
comment on column dead_letter_list.id is 'Dead letter id, for `pgconverge dlq retry|discard`.';
comment on column dead_letter_list.task is 'Task identifier.';
comment on column dead_letter_list.reason is 'permanent: a non-retryable error; exhausted: transient errors until max_attempts.';
comment on column dead_letter_list.attempts is 'Attempts made.';
comment on column dead_letter_list.max_attempts is 'The job''s attempt limit (kept on retry).';
comment on column dead_letter_list.last_error is 'The error of the last attempt, one line.';
comment on column dead_letter_list.dead_at is 'When the job left the queue.';
comment on column dead_letter_list.dead_for_s is 'Seconds since dead_at.';
comment on column dead_letter_list.first_failed_at is 'When the first attempt failed.';
comment on column dead_letter_list.last_failed_at is 'When the last attempt failed.';
comment on column dead_letter_list.queue_name is 'Named queue of the job, if any (a retry goes back to it).';
comment on column dead_letter_list.job_id is 'The original graphile_worker job id (a retry gets a new one).';
comment on column dead_letter_list.payload is 'The payload as enqueued (a retry re-enqueues it unchanged).';

create view outbox_lag as
select
  collection,
  count(*) filter (where state = 'pending') as pending,
  count(*) filter (where state = 'pending' and attempts > 0) as retrying,
  count(*) filter (where state = 'pending' and leased_until > now()) as in_flight,
  count(*) filter (where state = 'dead') as dead,
  min(created_at) filter (where state = 'pending') as oldest_pending_at,
  extract(epoch from now() - min(created_at) filter (where state = 'pending'))::float8 as oldest_pending_age_s
from outbox
group by collection;
comment on view outbox_lag is 'How far Qdrant is behind Postgres, per collection; no row means nothing is waiting (Qdrant has every change).';
comment on column outbox_lag.collection is 'Qdrant collection.';
comment on column outbox_lag.pending is 'Changes not yet applied to Qdrant.';
comment on column outbox_lag.retrying is 'Pending changes that failed at least once (backing off).';
comment on column outbox_lag.in_flight is 'Pending changes a relay is syncing now (leased).';
comment on column outbox_lag.dead is 'Changes that failed permanently (see outbox_dead_changes); `pgconverge outbox retry` puts them back.';
comment on column outbox_lag.oldest_pending_at is 'When the oldest pending change was written.';
comment on column outbox_lag.oldest_pending_age_s is 'Seconds since oldest_pending_at: the relay''s lag. Null when nothing is pending.';

create view outbox_dead_changes as
select id, collection, point_id, last_error, attempts, dead_at, created_at
from outbox
where state = 'dead'
order by dead_at desc, id desc;
comment on view outbox_dead_changes is 'Outbox changes the relay gave up on, newest first, with the reason.';
comment on column outbox_dead_changes.id is 'Outbox row id, for `pgconverge outbox retry <id>`.';
comment on column outbox_dead_changes.collection is 'Qdrant collection.';
comment on column outbox_dead_changes.point_id is 'Qdrant point id (a UUID or an unsigned integer).';
comment on column outbox_dead_changes.last_error is 'Why the change could not be applied.';
comment on column outbox_dead_changes.attempts is 'Failed attempts.';
comment on column outbox_dead_changes.dead_at is 'When the change was marked dead.';
comment on column outbox_dead_changes.created_at is 'When the change was first written.';

create view worker_status as
select
  workers.id as worker_id,
  workers.hostname,
  workers.pid,
  now() - workers.heartbeat_at <= make_interval(secs => pgconverge_worker_dead_after_ms() / 1000.0) as alive,
  workers.heartbeat_at,
  extract(epoch from now() - workers.heartbeat_at)::float8 as heartbeat_age_s,
  (select count(*) from graphile_worker.jobs as jobs where jobs.locked_by = any(workers.locker_ids)) as running_jobs,
  workers.concurrency,
  workers.started_at,
  workers.tasks
from workers;
comment on view worker_status is 'Registered worker processes, alive or dead by heartbeat age. A dead worker''s row is removed (and its jobs released) by the next sweep of a live worker, so a lasting dead row means no worker is alive to sweep.';
comment on column worker_status.worker_id is 'Process identity: hostname, pid and a random suffix.';
comment on column worker_status.hostname is 'Host the process runs on.';
comment on column worker_status.pid is 'Process id on that host.';
comment on column worker_status.alive is 'Heartbeat younger than pgconverge_worker_dead_after_ms() (the setting pgconverge.worker_dead_after_ms, default 15000 like WORKER_DEAD_AFTER_MS).';
comment on column worker_status.heartbeat_at is 'Last heartbeat, on the database clock.';
comment on column worker_status.heartbeat_age_s is 'Seconds since the last heartbeat.';
comment on column worker_status.running_jobs is 'Jobs locked by this process now.';
comment on column worker_status.concurrency is 'Jobs the process runs at once.';
comment on column worker_status.started_at is 'When the process registered.';
comment on column worker_status.tasks is 'Task identifiers the process runs; null: not recorded (an older version), taken as every task.';

create view reconcile_latest as
select distinct on (collection)
  collection,
  id as run_id,
  missing + extra + stale as drift,
  missing,
  extra,
  stale,
  repaired,
  qdrant_points,
  postgres_points,
  finished_at,
  extract(epoch from now() - finished_at)::float8 as age_s
from reconcile_runs
order by collection, finished_at desc, id desc;
comment on view reconcile_latest is 'The latest comparison of Qdrant with Postgres, per collection (history in reconcile_runs).';
comment on column reconcile_latest.collection is 'Qdrant collection compared.';
comment on column reconcile_latest.run_id is 'reconcile_runs.id of the run.';
comment on column reconcile_latest.drift is 'missing + extra + stale: points that did not match Postgres.';
comment on column reconcile_latest.missing is 'Rows with no point in Qdrant.';
comment on column reconcile_latest.extra is 'Points with no row in Postgres.';
comment on column reconcile_latest.stale is 'Points whose content hash differed from their row''s.';
comment on column reconcile_latest.repaired is 'Whether the drift was queued in the outbox for repair.';
comment on column reconcile_latest.qdrant_points is 'Points seen in Qdrant.';
comment on column reconcile_latest.postgres_points is 'Rows the sync declared in Postgres.';
comment on column reconcile_latest.finished_at is 'When the run ended.';
comment on column reconcile_latest.age_s is 'Seconds since finished_at.';

-- A function of the threshold, so that the metrics (which pass WORKER_DEAD_AFTER_MS) and the
-- view (which reads the setting, like worker_status) share one definition.
create function pgconverge_unknown_tasks(dead_after_ms bigint)
returns table (task text, jobs bigint, oldest_due_at timestamptz)
language sql stable as $$
  with live as (
    select workers.tasks from workers
    where now() - workers.heartbeat_at <= make_interval(secs => dead_after_ms / 1000.0)
  )
  select job_list.task, count(*), min(job_list.run_at)
  from job_list
  where job_list.state in ('pending', 'retrying') and job_list.run_at <= now()
    and exists (select 1 from live)
    and not exists (select 1 from live where live.tasks is null or job_list.task = any(live.tasks))
  group by job_list.task
$$;
comment on function pgconverge_unknown_tasks(bigint) is 'Tasks of due jobs (pending, or retrying and due) that no live worker runs (heartbeat within dead_after_ms), with how many and since when; empty when no worker is alive (worker_status says so).';

create view unknown_tasks as
select * from pgconverge_unknown_tasks(pgconverge_worker_dead_after_ms());
comment on view unknown_tasks is 'Due jobs whose task no live worker runs: they wait until a worker with that task starts. Empty when no worker is alive at all.';
comment on column unknown_tasks.task is 'Task identifier no live worker has.';
comment on column unknown_tasks.jobs is 'Due jobs of that task.';
comment on column unknown_tasks.oldest_due_at is 'When the longest-waiting of them became due.';

-- The read-only role. Roles are cluster-wide but grants are per database, so creating the
-- role is idempotent and tolerant (another database may create it at the same moment), and
-- the grants are made in every database that migrates. A migrating user without CREATEROLE
-- (common on managed Postgres) must still be able to migrate: then the role is not created,
-- a notice says so, and an administrator can create it later and call this function again
-- (it is idempotent). GRANT needs no special privilege here: the migrating user owns these objects.
create function pgconverge_setup_reader(reader name default 'pgconverge_reader') returns boolean
language plpgsql as $$
declare
  app_schema name := current_schema();
begin
  if not exists (select 1 from pg_roles where rolname = reader) then
    begin
      execute format('create role %I nologin', reader);
    exception
      when insufficient_privilege then
        raise notice '%', format('pgconverge: read-only role %I not created: %I lacks CREATEROLE. An administrator can run "create role %I nologin", then "select pgconverge_setup_reader(%L)" in this database.',
          reader, current_user, reader, reader);
        return false;
      when duplicate_object or unique_violation then
        null; -- created at the same moment by a migration of another database
    end;
  end if;
  execute format('grant usage on schema %I, graphile_worker to %I', app_schema, reader);
  execute format('grant select on all tables in schema %I, graphile_worker to %I', app_schema, reader);
  -- Tables and views of later migrations (made by this same user) are readable too.
  execute format('alter default privileges in schema %I, graphile_worker grant select on tables to %I', app_schema, reader);
  return true;
end;
$$;
comment on function pgconverge_setup_reader(name) is 'Creates the read-only role (NOLOGIN) if missing and allowed, and grants it USAGE on the app and graphile_worker schemas and SELECT on their tables and views, nothing else. Idempotent; false when the role does not exist and could not be created. Give it to people with "grant pgconverge_reader to alice".';
revoke execute on function pgconverge_setup_reader(name) from public;

select pgconverge_setup_reader();
