-- When a job is added with the job_key of a job that is running, graphile-worker takes the key
-- off the running job, sets its attempts to max_attempts (so it is never retried) and adds a
-- new job for the key. If the running job then fails or its worker dies, it is left with
-- attempts exhausted, exactly like a job that failed for good: the sweeper would dead-letter
-- it although the new job does its work. pgconverge's addJob records the supersession here,
-- in the same transaction, so the sweeper can tell the two apart.
create table superseded_jobs (
  job_id bigint primary key,
  superseded_at timestamptz not null default now()
);
comment on table superseded_jobs is 'Running jobs replaced through their job_key by a newer job (graphile-worker then marks them exhausted). The sweeper completes them instead of dead-lettering; rows are pruned once the job has left the queue.';
comment on column superseded_jobs.job_id is 'graphile_worker job id of the replaced (running) job.';
comment on column superseded_jobs.superseded_at is 'When the newer job with the same key was added.';
