-- The task runtime: worker liveness, the applied-job ledger, failure history and dead letters.
-- Jobs themselves live in graphile_worker; these tables hold what graphile-worker does not.

create table workers (
  id text primary key check (id <> ''),
  hostname text not null,
  pid integer not null check (pid > 0),
  concurrency integer not null check (concurrency > 0),
  locker_ids text[] not null default '{}',
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  check (heartbeat_at >= started_at),
  tasks text[]
);
comment on table workers is 'One row per live pgconverge worker process, refreshed by its heartbeat; a row whose heartbeat is older than the threshold is swept and its jobs released.';
comment on column workers.id is 'Process identity: hostname, pid and a random suffix.';
comment on column workers.locker_ids is 'The graphile-worker worker and pool ids this process locks jobs with (graphile_worker jobs.locked_by); released by graphile_worker.force_unlock_workers when the process is dead.';
comment on column workers.hostname is 'Host the process runs on.';
comment on column workers.pid is 'Operating-system process id on that host.';
comment on column workers.concurrency is 'Jobs this process runs at once (WORKER_CONCURRENCY).';
comment on column workers.started_at is 'When the process registered, on the database clock.';
comment on column workers.heartbeat_at is 'Last heartbeat, on the database clock.';
comment on column workers.tasks is 'Task identifiers this process runs, recorded when it registers; null for a worker of an older version, which is assumed to run every task.';
create index workers_heartbeat_at_idx on workers (heartbeat_at);

create table job_ledger (
  job_id bigint not null,
  revision integer not null check (revision >= 0),
  task text not null check (task <> ''),
  outcome text not null check (outcome in ('applied', 'dead')),
  recorded_at timestamptz not null default now(),
  primary key (job_id, revision)
);
comment on table job_ledger is 'Durable record that a job''s effects committed (or that it was dead-lettered), written in the same transaction. A re-run of a recorded job is a no-op; rows are pruned once graphile-worker has deleted the job.';
comment on column job_ledger.job_id is 'graphile_worker job id; ids are never reused.';
comment on column job_ledger.revision is 'graphile_worker job revision: a job replaced through its job_key is a new piece of work.';
comment on column job_ledger.task is 'Task identifier, for reading the ledger in psql.';
comment on column job_ledger.recorded_at is 'Commit time of the recording transaction.';
comment on column job_ledger.outcome is 'applied: the apply transaction committed; dead: the job went to dead_letters.';

create table job_failures (
  job_id bigint not null,
  revision integer not null check (revision >= 0),
  failures integer not null check (failures > 0),
  first_failed_at timestamptz not null,
  last_failed_at timestamptz not null,
  last_error text not null,
  primary key (job_id, revision),
  check (last_failed_at >= first_failed_at)
);
comment on table job_failures is 'Failure history of jobs still in the queue (graphile-worker keeps only the last error); feeds dead_letters.first_failed_at. Pruned with job_ledger.';
comment on column job_failures.job_id is 'graphile_worker job id.';
comment on column job_failures.revision is 'graphile_worker job revision.';
comment on column job_failures.failures is 'Failed attempts so far.';
comment on column job_failures.first_failed_at is 'When the first attempt failed.';
comment on column job_failures.last_failed_at is 'When the latest attempt failed.';
comment on column job_failures.last_error is 'The latest attempt''s error, one line.';

create table dead_letters (
  id bigint generated always as identity primary key,
  job_id bigint not null,
  revision integer not null check (revision >= 0),
  task text not null check (task <> ''),
  queue_name text,
  payload jsonb not null,
  reason text not null check (reason in ('permanent', 'exhausted')),
  attempts integer not null check (attempts >= 1),
  max_attempts integer not null check (max_attempts >= 1),
  last_error text not null check (last_error <> ''),
  first_failed_at timestamptz not null,
  last_failed_at timestamptz not null,
  dead_at timestamptz not null default now(),
  unique (job_id, revision),
  check (last_failed_at >= first_failed_at),
  check (reason = 'permanent' or attempts >= max_attempts)
);
comment on table dead_letters is 'Jobs that failed permanently or exhausted their attempts, with everything needed to retry them; nothing leaves the queue without a row here or a committed effect.';
comment on column dead_letters.id is 'Dead letter id, used by `pgconverge dlq retry|discard`.';
comment on column dead_letters.revision is 'graphile_worker job revision that failed.';
comment on column dead_letters.task is 'Task identifier.';
comment on column dead_letters.queue_name is 'graphile-worker queue the job ran in, if any (retries go back to it).';
comment on column dead_letters.payload is 'The job payload exactly as enqueued, so the job can be retried.';
comment on column dead_letters.max_attempts is 'The job''s attempt limit.';
comment on column dead_letters.first_failed_at is 'When the first attempt failed.';
comment on column dead_letters.last_failed_at is 'When the last attempt failed.';
comment on column dead_letters.dead_at is 'When the job left the queue for this table.';
comment on column dead_letters.job_id is 'The original graphile_worker job id (the job itself has left the queue).';
comment on column dead_letters.reason is 'permanent: a non-retryable error (validation, HTTP 4xx, PermanentError); exhausted: transient errors until max_attempts.';
comment on column dead_letters.attempts is 'Attempts made, including the last one.';
comment on column dead_letters.last_error is 'The error of the last attempt, one line.';
create index dead_letters_task_dead_at_idx on dead_letters (task, dead_at);

-- The sweeper looks for jobs graphile-worker gave up on (attempts exhausted) every few
-- seconds; graphile-worker has no index for them, so without this each sweep scans the queue.
create index pgconverge_jobs_exhausted_idx on graphile_worker._private_jobs (id)
  where attempts >= max_attempts;
comment on index graphile_worker.pgconverge_jobs_exhausted_idx is 'pgconverge: finds exhausted jobs for dead-lettering without scanning the queue.';

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
