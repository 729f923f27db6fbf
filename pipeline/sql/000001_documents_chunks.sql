-- The reference pipeline's data: documents split into embedded chunks. Each embedded chunk is
-- one Qdrant point (same id), synced through pgconverge's outbox by the pipeline's sync
-- declaration. These are the tables pgconverge 0.1 created in its own 000002, unchanged.

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
