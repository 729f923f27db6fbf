-- WORKER_DEAD_AFTER_MS's default fell from 30 s to 15 s (with HEARTBEAT_INTERVAL_MS 2 s and
-- SWEEP_INTERVAL_MS 2 s), so that a SIGKILLed worker's job runs again elsewhere within about
-- 20 s at the shipped defaults. worker_status falls back to the same default when the setting
-- pgconverge.worker_dead_after_ms is unset, so the fallback follows it.
create or replace function pgconverge_worker_dead_after_ms() returns bigint
language sql stable parallel safe as $$
  select case when s ~ '^[0-9]{1,12}$' then s::bigint else 15000 end
  from coalesce(current_setting('pgconverge.worker_dead_after_ms', true), '') as s
$$;
comment on function pgconverge_worker_dead_after_ms() is 'Heartbeat age (ms) after which worker_status calls a worker dead: the setting pgconverge.worker_dead_after_ms when it is a whole number, else 15000 (the default of WORKER_DEAD_AFTER_MS).';
comment on column worker_status.alive is 'Heartbeat younger than pgconverge_worker_dead_after_ms() (the setting pgconverge.worker_dead_after_ms, default 15000 like WORKER_DEAD_AFTER_MS).';
