-- The benchmark adapter's own tables (bench/harness): what its job writes, and what its
-- producer committed, so a run can prove that every enqueued job was applied exactly once.

create table bench_harness_applied (
  run_id text not null check (run_id <> ''),
  seq bigint not null check (seq > 0),
  enqueued_at timestamptz not null,
  applied_at timestamptz not null default now()
);
comment on table bench_harness_applied is 'One row per applied benchmark job, written in the job''s own transaction; no unique key, so a job applied twice shows as two rows.';
comment on column bench_harness_applied.run_id is 'The producing replica''s run (instance and start), so sequence numbers of a restarted replica never collide.';
comment on column bench_harness_applied.seq is 'The job''s sequence number within its run, from 1.';
comment on column bench_harness_applied.enqueued_at is 'When the producer built the job (its payload''s enqueued_at).';
comment on column bench_harness_applied.applied_at is 'When the job''s transaction wrote the row.';

create table bench_harness_batches (
  run_id text not null check (run_id <> ''),
  first_seq bigint not null check (first_seq > 0),
  last_seq bigint not null,
  committed_at timestamptz not null default now(),
  primary key (run_id, first_seq),
  check (last_seq >= first_seq)
);
comment on table bench_harness_batches is 'One row per bulk enqueue, written in the same transaction as its jobs: the sequence numbers that must each be applied once.';
comment on column bench_harness_batches.run_id is 'The producing replica''s run.';
comment on column bench_harness_batches.first_seq is 'First sequence number of the batch.';
comment on column bench_harness_batches.last_seq is 'Last sequence number of the batch (inclusive).';
comment on column bench_harness_batches.committed_at is 'When the batch was enqueued.';
