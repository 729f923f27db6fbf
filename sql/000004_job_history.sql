-- Job history: one row per finished job (applied, dead-lettered, or skipped because it was
-- applied before), written in the same transaction as the job's effects, so the history is
-- exactly as true as they are. graphile-worker deletes a job once it completes; this is what
-- is left of it. The table is partitioned by day of finished_at, so retention is a matter of
-- dropping whole partitions (no DELETE, no vacuum of millions of rows).

create table job_history (
  finished_at timestamptz not null default clock_timestamp(),
  job_id bigint not null,
  revision integer not null check (revision >= 0),
  task text not null check (task <> ''),
  outcome text not null check (outcome in ('applied', 'dead', 'skipped')),
  attempts integer not null check (attempts >= 0),
  enqueued_at timestamptz not null,
  started_at timestamptz,
  last_error text,
  result jsonb,
  check (outcome <> 'dead' or last_error is not null),
  check (result is null or outcome = 'applied'),
  -- The cap of apply's result (JOB_RESULT_MAX_BYTES in src/runtime/defineTask.ts), enforced here too.
  check (result is null or octet_length(result::text) <= 4096)
) partition by range (finished_at);
comment on table job_history is 'One row per finished job (applied, dead-lettered or skipped as applied before), written in the transaction of its effects. Partitioned by day of finished_at; partitions older than JOB_HISTORY_RETENTION_DAYS are dropped by the sweeper (pgconverge_prune_job_history). Read it through job_history_list.';
comment on column job_history.finished_at is 'When the job finished: the clock at the end of the transaction that recorded it (its commit follows within milliseconds).';
comment on column job_history.job_id is 'graphile_worker job id (ids are never reused; a job replaced through its job_key keeps its id with a new revision).';
comment on column job_history.revision is 'graphile_worker job revision.';
comment on column job_history.task is 'Task identifier.';
comment on column job_history.outcome is 'applied: its apply transaction committed; dead: it went to dead_letters; skipped: a re-run of a job whose effects had already committed (changed nothing).';
comment on column job_history.attempts is 'Attempts made, including the one that finished it.';
comment on column job_history.enqueued_at is 'When the job was enqueued (graphile_worker created_at).';
comment on column job_history.started_at is 'When its last attempt took the job (graphile_worker locked_at); null when the sweeper dead-lettered it after its worker died.';
comment on column job_history.last_error is 'The error that dead-lettered it; null otherwise.';
comment on column job_history.result is 'What apply returned, if anything: a JSON value of at most 4096 bytes (applyBatch tasks record none).';

-- Rows that fall outside the daily partitions (a clock far off, partitions not yet made) land
-- here rather than failing the job's transaction; the prune deletes its old rows.
create table job_history_default partition of job_history default;
comment on table job_history_default is 'job_history rows outside the daily partitions (normally none); pruned by row.';

-- Partitions do not inherit column comments; each gets its parent's, so psql's \d+ explains it too.
create function pgconverge_comment_partition(partition regclass) returns void
language plpgsql as $$
declare
  col record;
begin
  for col in
    select a.attname, col_description('job_history'::regclass, a.attnum) as description
    from pg_attribute a
    where a.attrelid = 'job_history'::regclass and a.attnum > 0 and not a.attisdropped
  loop
    execute format('comment on column %s.%I is %L', partition, col.attname, col.description);
  end loop;
end;
$$;
comment on function pgconverge_comment_partition(regclass) is 'Copies job_history''s column comments onto one of its partitions.';
select pgconverge_comment_partition('job_history_default');

-- Indexes on the parent apply to every partition; every job's transaction maintains them, so
-- there are two. The time index serves the dashboard's last hour and `pgconverge jobs` (newest
-- first, a task filtered along the way); job ids grow with time, so a BRIN index (a few pages,
-- next to free to maintain) finds `pgconverge jobs show ID`'s rows.
create index job_history_finished_at_idx on job_history (finished_at);
create index job_history_job_id_idx on job_history using brin (job_id) with (pages_per_range = 16);

create function pgconverge_job_history_partition(day date) returns text
language plpgsql as $$
declare
  name text := format('job_history_p%s', to_char(day, 'YYYYMMDD'));
begin
  if to_regclass(quote_ident(name)) is null then
    execute format(
      'create table %I partition of job_history for values from (%L) to (%L)',
      name, (day::timestamp at time zone 'UTC'), ((day + 1)::timestamp at time zone 'UTC'));
    execute format('comment on table %I is %L', name, format('job_history rows finished on %s (UTC).', day));
    perform pgconverge_comment_partition(name::regclass);
  end if;
  return name;
end;
$$;
comment on function pgconverge_job_history_partition(date) is 'Creates the job_history partition of one UTC day if missing; returns its name.';

create function pgconverge_prune_job_history(retention_days integer, days_ahead integer default 2) returns integer
language plpgsql as $$
declare
  today date := (now() at time zone 'UTC')::date;
  cutoff timestamptz := (today - retention_days)::timestamp at time zone 'UTC';
  part record;
  dropped integer := 0;
begin
  -- One worker at a time; the others skip (every worker's sweeper calls this).
  if not pg_try_advisory_xact_lock(7310245612) then
    return 0;
  end if;
  -- Partition DDL waits for the jobs writing history; never hold up their commits for long.
  set local lock_timeout = '2s';
  for day in 0..days_ahead loop
    perform pgconverge_job_history_partition(today + day);
  end loop;
  for part in
    select child.relname as name
    from pg_inherits
    join pg_class child on child.oid = pg_inherits.inhrelid
    join pg_class parent on parent.oid = pg_inherits.inhparent
    where parent.oid = 'job_history'::regclass
      and child.relname ~ '^job_history_p[0-9]{8}$'
      and to_date(substring(child.relname from 14), 'YYYYMMDD') + 1 <= today - retention_days
  loop
    execute format('drop table %I', part.name);
    dropped := dropped + 1;
  end loop;
  delete from job_history_default where finished_at < cutoff;
  return dropped;
end;
$$;
comment on function pgconverge_prune_job_history(integer, integer) is 'Keeps job_history to retention_days whole UTC days: creates the partitions of today and the next days_ahead days, drops the daily partitions that ended before the cutoff and deletes older rows of the default partition. Returns how many partitions it dropped; 0 when another session is pruning.';

select pgconverge_prune_job_history(7);

create view job_history_list as
select
  job_id,
  revision,
  task,
  outcome,
  attempts,
  enqueued_at,
  started_at,
  finished_at,
  (extract(epoch from finished_at - started_at) * 1000)::float8 as duration_ms,
  (extract(epoch from finished_at - enqueued_at) * 1000)::float8 as total_ms,
  last_error,
  result
from job_history;
comment on view job_history_list is 'Finished jobs with their timings; newest first by finished_at (`pgconverge jobs`).';
comment on column job_history_list.job_id is 'graphile_worker job id.';
comment on column job_history_list.revision is 'graphile_worker job revision.';
comment on column job_history_list.task is 'Task identifier.';
comment on column job_history_list.outcome is 'applied, dead or skipped (see job_history.outcome).';
comment on column job_history_list.attempts is 'Attempts made.';
comment on column job_history_list.enqueued_at is 'When the job was enqueued.';
comment on column job_history_list.started_at is 'When its last attempt started; null if unknown.';
comment on column job_history_list.finished_at is 'When it finished.';
comment on column job_history_list.duration_ms is 'Milliseconds from the start of the last attempt to the end: run time. Null when started_at is.';
comment on column job_history_list.total_ms is 'Milliseconds from enqueue to the end, retries and waiting included.';
comment on column job_history_list.last_error is 'The error that dead-lettered it, if it did.';
comment on column job_history_list.result is 'What apply returned, if anything.';

create view job_throughput as
select
  date_trunc('minute', finished_at) as minute,
  task,
  count(*) filter (where outcome = 'applied') as applied,
  count(*) filter (where outcome = 'dead') as dead,
  count(*) filter (where outcome = 'skipped') as skipped
from job_history
where finished_at >= date_trunc('minute', now()) - interval '59 minutes'
group by 1, 2;
comment on view job_throughput is 'Jobs finished per minute and task over the last hour (this minute included), from job_history; a minute with none has no row.';
comment on column job_throughput.minute is 'Start of the minute.';
comment on column job_throughput.task is 'Task identifier.';
comment on column job_throughput.applied is 'Jobs applied in that minute.';
comment on column job_throughput.dead is 'Jobs dead-lettered in that minute.';
comment on column job_throughput.skipped is 'Re-runs of already applied jobs in that minute.';

-- Every action taken through the dashboard: who, what, when. Written in the transaction of the action.
create table dashboard_audit (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  actor text not null check (actor <> ''),
  action text not null check (action ~ '^[a-z][a-z_.]*$'),
  target text not null,
  detail jsonb not null default '{}'::jsonb
);
comment on table dashboard_audit is 'Every action taken through the dashboard (retry, discard, reconcile ...), written in the transaction of the action; shown on the dashboard''s audit page.';
comment on column dashboard_audit.id is 'Audit entry id.';
comment on column dashboard_audit.at is 'When the action committed.';
comment on column dashboard_audit.actor is 'Who: the authenticated user name, or "token" for the API token.';
comment on column dashboard_audit.action is 'What, e.g. dlq.retry, dlq.discard, outbox.retry, reconcile.run.';
comment on column dashboard_audit.target is 'What it acted on: ids, a task, a collection.';
comment on column dashboard_audit.detail is 'What it did: counts and ids affected.';
create index dashboard_audit_at_idx on dashboard_audit (at desc);
