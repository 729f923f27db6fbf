-- Job history maintenance, revised (sql/000004 made the first version):
--  - partitions are made a week ahead, built aside and then attached: ATTACH PARTITION takes
--    SHARE UPDATE EXCLUSIVE on job_history, which the jobs inserting history (ROW EXCLUSIVE) never
--    wait for, where CREATE TABLE ... PARTITION OF takes ACCESS EXCLUSIVE;
--  - rows the default partition caught while their day's partition was missing (no worker ran
--    the maintenance for days) move into that day's partition as it is made, in its transaction:
--    otherwise the partition could never be made (Postgres refuses a range the default partition
--    holds rows of) and pruning would stop for good;
--  - old days are dropped under a lock that is tried for 50 ms at a time: a DROP waiting in the
--    lock queue would hold up every job's commit behind it. DETACH PARTITION ... CONCURRENTLY
--    would need no such lock, but Postgres does not allow it while a default partition exists;
--  - the maintenance runs as the tables' owner (SECURITY DEFINER), so a worker login that does
--    not own them can run it once granted EXECUTE;
--  - `pgconverge jobs --task T` and the dashboard's per-task pages get an index.
--
-- Where job_history rows are written (each in the transaction of the job's effects):
--  1. claimBatch (src/runtime/graphileJobs.ts): applied or skipped, for every job of a
--     group-commit batch, inside the batch's first statement (a statement more would be a round
--     trip more per commit, which one-row jobs pay in full); setHistoryResults then adds what
--     apply returned;
--  2. recordHistory (src/runtime/queries.ts): a job dead-lettered by its own worker (with its
--     dead letter) and a re-run found already applied before prepare (a statement of its own:
--     it has no effects to share a transaction with);
--  3. deadLetterExhaustedJobs (src/runtime/graphileJobs.ts): a job the sweeper dead-letters after
--     its worker died; only that statement reads the job's enqueue time from graphile-worker's
--     private table, where no Job object exists.

create index job_history_task_finished_at_idx on job_history (task, finished_at);
comment on index job_history_task_finished_at_idx is 'One task''s history, newest first: `pgconverge jobs --task T` and the dashboard''s per-task pages.';

drop function pgconverge_prune_job_history(integer, integer);
drop function pgconverge_job_history_partition(date);

create function pgconverge_job_history_partition(day date) returns text
language plpgsql as $$
declare
  name text := format('job_history_p%s', to_char(day, 'YYYYMMDD'));
  low timestamptz := day::timestamp at time zone 'UTC';
  high timestamptz := (day + 1)::timestamp at time zone 'UTC';
begin
  if to_regclass(quote_ident(name)) is not null then
    return name;
  end if;
  execute format('create table %I (like job_history including defaults including constraints)', name);
  -- ATTACH locks the default partition anyway (to check it); locking it first keeps a row of
  -- this day from landing there between the move and the attach.
  lock table job_history_default in access exclusive mode;
  execute format(
    'with moved as (delete from job_history_default where finished_at >= %L and finished_at < %L returning *) insert into %I select * from moved',
    low, high, name);
  execute format('alter table job_history attach partition %I for values from (%L) to (%L)', name, low, high);
  execute format('comment on table %I is %L', name, format('job_history rows finished on %s (UTC).', day));
  perform pgconverge_comment_partition(name::regclass);
  return name;
end;
$$;
comment on function pgconverge_job_history_partition(date) is 'Makes the job_history partition of one UTC day if missing (built aside, then attached), moving into it the rows of that day the default partition holds; returns its name.';
revoke execute on function pgconverge_job_history_partition(date) from public;

create function pgconverge_prune_job_history(retention_days integer, days_ahead integer default 7) returns integer
language plpgsql security definer as $$
declare
  today date := (now() at time zone 'UTC')::date;
  cutoff date := today - retention_days;
  day date;
  part record;
  tries integer;
  dropped integer := 0;
begin
  if retention_days is null or retention_days < 1 or days_ahead is null or days_ahead < 0 then
    raise exception 'pgconverge_prune_job_history: retention_days must be 1 or more and days_ahead 0 or more (got %, %)', retention_days, days_ahead;
  end if;
  -- One worker at a time; the others skip (every worker's sweeper calls this).
  if not pg_try_advisory_xact_lock(7310245612) then
    return 0;
  end if;
  -- Making partitions waits for readers of the default partition only; not for long.
  perform set_config('lock_timeout', '2s', true);
  delete from job_history_default where finished_at < cutoff::timestamp at time zone 'UTC';
  for day in select distinct (finished_at at time zone 'UTC')::date from job_history_default loop
    perform pgconverge_job_history_partition(day);
  end loop;
  for day in select generate_series(today, today + days_ahead, interval '1 day')::date loop
    perform pgconverge_job_history_partition(day);
  end loop;
  -- Dropping a partition takes ACCESS EXCLUSIVE on job_history. Queued for it, the DROP would
  -- make every insert of history wait behind it; so it waits 50 ms at most, a few times, with
  -- pauses for the jobs it held up, and otherwise leaves the day for the next run.
  for part in
    select child.relname as name
    from pg_inherits
    join pg_class child on child.oid = pg_inherits.inhrelid
    where pg_inherits.inhparent = 'job_history'::regclass
      and child.relname ~ '^job_history_p[0-9]{8}$'
      and to_date(substring(child.relname from 14), 'YYYYMMDD') + 1 <= cutoff
    order by 1
  loop
    tries := 0;
    loop
      begin
        perform set_config('lock_timeout', '50ms', true);
        lock table job_history in access exclusive mode;
        execute format('drop table %I', part.name);
        dropped := dropped + 1;
        exit;
      exception when lock_not_available then
        tries := tries + 1;
        if tries >= 10 then
          return dropped;
        end if;
        perform pg_sleep(0.2);
      end;
    end loop;
  end loop;
  return dropped;
end;
$$;
-- SECURITY DEFINER: its name lookups must not follow the caller's search_path.
do $$
begin
  execute format('alter function pgconverge_prune_job_history(integer, integer) set search_path = %I, pg_temp', current_schema());
end;
$$;
comment on function pgconverge_prune_job_history(integer, integer) is 'Keeps job_history to retention_days whole UTC days: moves the rows the default partition caught into their days'' partitions (deleting those past the retention), makes the partitions of today and the next days_ahead days, and drops the daily partitions that ended before the cutoff (a drop that cannot get its lock within a few tries is left for the next run). Runs as the owner (SECURITY DEFINER); EXECUTE must be granted to a worker login that does not own the tables. Returns how many partitions it dropped; 0 when another session is pruning.';
revoke execute on function pgconverge_prune_job_history(integer, integer) from public;

select pgconverge_job_history_partition(day::date)
from generate_series((now() at time zone 'UTC')::date, (now() at time zone 'UTC')::date + 7, interval '1 day') as day;
