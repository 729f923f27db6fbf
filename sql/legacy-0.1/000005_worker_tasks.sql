-- A job whose task no running worker knows waits forever without a word: graphile-worker only
-- fetches the tasks a worker has. Each worker records the tasks it runs, so the database can
-- tell which queued jobs nobody will run (the heartbeat writes them; status and metrics read
-- the view below).
alter table workers add column tasks text[];
comment on column workers.tasks is 'Task identifiers this process runs, recorded when it registers; null for a worker of an older version, which is assumed to run every task.';

-- worker_status gains the column (create or replace may only add columns at the end).
create or replace view worker_status as
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
comment on column worker_status.tasks is 'Task identifiers the process runs; null: not recorded (an older version), taken as every task.';

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
