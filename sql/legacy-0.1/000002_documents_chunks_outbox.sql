-- The reference pipeline's data (documents split into embedded chunks) and the outbox that
-- mirrors chunks into Qdrant. Postgres is the source of truth; Qdrant is derived from it.

create table documents (
  id uuid primary key default gen_random_uuid(),
  source text not null unique check (source <> ''),
  content text not null check (content <> ''),
  content_sha256 text not null check (content_sha256 ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (updated_at >= created_at)
);
comment on table documents is 'Ingested documents; the source of truth that chunks and Qdrant points derive from.';
comment on column documents.id is 'Document id; carried in each of its points'' payload as document_id.';
comment on column documents.source is 'Where the document came from, e.g. its file path; unique, so re-ingesting a path updates it.';
comment on column documents.content is 'Full text, UTF-8 (Postgres text holds no NUL bytes).';
comment on column documents.content_sha256 is 'sha256 of content, hex; unchanged content is not re-processed.';
comment on column documents.created_at is 'First ingest.';
comment on column documents.updated_at is 'Last change of content.';

create table chunks (
  id uuid primary key,
  document_id uuid not null references documents (id) on delete cascade,
  chunk_index integer not null check (chunk_index >= 0),
  content text not null check (content <> ''),
  content_sha256 text not null check (content_sha256 ~ '^[0-9a-f]{64}$'),
  embedding real[] check (cardinality(embedding) > 0),
  embedding_model text check (embedding_model <> ''),
  embedded_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (document_id, chunk_index) deferrable initially deferred,
  check ((embedding is null) = (embedding_model is null) and (embedding is null) = (embedded_at is null))
);
comment on table chunks is 'Pieces of documents, each embedded once; every chunk with an embedding is one Qdrant point with the same id.';
comment on column chunks.id is 'Chunk id and Qdrant point id; stable while the chunk''s text is unchanged.';
comment on column chunks.document_id is 'The document this chunk belongs to; deleting the document deletes its chunks (and, through the outbox, its points).';
comment on column chunks.chunk_index is 'Position of the chunk in its document, from 0.';
comment on column chunks.content is 'The chunk''s text.';
comment on column chunks.content_sha256 is 'sha256 of content, hex; mirrored in the point payload so drift is detectable.';
comment on column chunks.embedding is 'The embedding vector, kept in Postgres so Qdrant can be rebuilt without re-embedding; null until embedded.';
comment on column chunks.embedding_model is 'Model that produced embedding.';
comment on column chunks.embedded_at is 'When embedding was stored.';
comment on column chunks.created_at is 'When the chunk was first written.';
comment on column chunks.updated_at is 'Last change of the row.';
create index chunks_document_id_idx on chunks (document_id);

create table outbox (
  id bigint generated always as identity primary key,
  collection text not null check (collection <> ''),
  point_id uuid not null,
  version bigint not null default 1 check (version >= 1),
  state text not null default 'pending' check (state in ('pending', 'dead')),
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz not null default now(),
  leased_by text,
  leased_until timestamptz,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  dead_at timestamptz,
  unique (collection, point_id),
  check ((leased_by is null) = (leased_until is null)),
  check ((state = 'dead') = (dead_at is not null)),
  check (state = 'pending' or (last_error is not null and leased_by is null))
);
comment on table outbox is 'Pending changes of Qdrant points: one row per (collection, point id), written in the same transaction as the data. The relay syncs each key to the current Postgres state and deletes the row; rows it cannot apply stay here as dead, with the reason.';
comment on column outbox.id is 'Row id.';
comment on column outbox.collection is 'Qdrant collection the point lives in.';
comment on column outbox.point_id is 'Qdrant point id (chunks.id).';
comment on column outbox.version is 'Grows on every new write to the key; the relay removes the row only if it is unchanged since the relay read it, so a change made while a sync was in flight is synced again.';
comment on column outbox.state is 'pending: to be synced; dead: a permanent failure (see last_error), kept until `pgconverge outbox retry`.';
comment on column outbox.attempts is 'Failed sync attempts since the last write.';
comment on column outbox.next_attempt_at is 'Earliest next sync (exponential backoff with jitter after failures, or the server''s Retry-After).';
comment on column outbox.leased_by is 'Relay currently syncing this key; no other relay takes it before leased_until.';
comment on column outbox.leased_until is 'End of the lease; after it a crashed relay''s rows are taken by another.';
comment on column outbox.last_error is 'Why the last attempt failed, one line.';
comment on column outbox.created_at is 'When the oldest unsynced change of this key was written: the row''s lag counts from here.';
comment on column outbox.updated_at is 'Last write or attempt.';
comment on column outbox.dead_at is 'When the row was marked dead.';
create index outbox_claim_idx on outbox (collection, next_attempt_at) where state = 'pending';
create index outbox_dead_idx on outbox (dead_at) where state = 'dead';

-- Wakes relays when changes commit (notifications are delivered at commit, once per
-- transaction and channel); the relay's slow poll covers a missed notification.
create function outbox_notify() returns trigger language plpgsql as $$
begin
  perform pg_notify('pgconverge_outbox', '');
  return null;
end;
$$;
comment on function outbox_notify() is 'Notifies channel pgconverge_outbox after writes to outbox.';
create trigger outbox_notify after insert or update of version, state on outbox
  for each statement execute function outbox_notify();

create table reconcile_runs (
  id bigint generated always as identity primary key,
  collection text not null check (collection <> ''),
  started_at timestamptz not null,
  finished_at timestamptz not null default now(),
  qdrant_points bigint not null check (qdrant_points >= 0),
  postgres_points bigint not null check (postgres_points >= 0),
  missing bigint not null check (missing >= 0),
  extra bigint not null check (extra >= 0),
  stale bigint not null check (stale >= 0),
  repaired boolean not null,
  check (finished_at >= started_at)
);
comment on table reconcile_runs is 'Result of each comparison of Qdrant with Postgres; status shows the latest.';
comment on column reconcile_runs.id is 'Run id.';
comment on column reconcile_runs.collection is 'Qdrant collection compared.';
comment on column reconcile_runs.started_at is 'Start of the run.';
comment on column reconcile_runs.finished_at is 'End of the run.';
comment on column reconcile_runs.qdrant_points is 'Points seen in Qdrant.';
comment on column reconcile_runs.postgres_points is 'Embedded chunks seen in Postgres.';
comment on column reconcile_runs.missing is 'Chunks with no point in Qdrant.';
comment on column reconcile_runs.extra is 'Points with no chunk in Postgres.';
comment on column reconcile_runs.stale is 'Points whose content_sha256 differs from their chunk.';
comment on column reconcile_runs.repaired is 'Whether the differences were written to the outbox for the relay to repair.';
