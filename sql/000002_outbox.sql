-- The outbox engine: pending changes of Qdrant points (one row per collection and point id,
-- written in the application's transaction), the results of reconciles, and the owner id this
-- database stamps into the points it writes. Postgres is the source of truth; Qdrant is
-- derived from it. Which tables feed which collection is the application's sync declaration,
-- not schema: these tables name no application table.

create table outbox (
  id bigint generated always as identity primary key,
  collection text not null check (collection <> ''),
  point_id text not null,
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
  check (state = 'pending' or (last_error is not null and leased_by is null)),
  constraint outbox_point_id_check check (
    point_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
    or (point_id ~ '^(0|[1-9][0-9]{0,15})$' and point_id::numeric <= 9007199254740991)
  )
);
comment on table outbox is 'Pending changes of Qdrant points: one row per (collection, point id), written in the same transaction as the data. The relay syncs each key to the current Postgres state and deletes the row; rows it cannot apply stay here as dead, with the reason.';
comment on column outbox.id is 'Row id.';
comment on column outbox.collection is 'Qdrant collection the point lives in.';
comment on column outbox.point_id is 'Qdrant point id, as text: a UUID (lowercase, with hyphens) or an unsigned integer up to 2^53 - 1 (decimal). One spelling per id, so one row per point.';
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
  check (finished_at >= started_at),
  unowned bigint not null default 0 check (unowned >= 0)
);
comment on table reconcile_runs is 'Result of each comparison of Qdrant with Postgres; status shows the latest.';
comment on column reconcile_runs.id is 'Run id.';
comment on column reconcile_runs.collection is 'Qdrant collection compared.';
comment on column reconcile_runs.started_at is 'Start of the run.';
comment on column reconcile_runs.finished_at is 'End of the run.';
comment on column reconcile_runs.qdrant_points is 'Points seen in Qdrant.';
comment on column reconcile_runs.postgres_points is 'Rows the sync declares in Postgres (points that should exist).';
comment on column reconcile_runs.missing is 'Rows with no point in Qdrant.';
comment on column reconcile_runs.extra is 'Points with no row in Postgres.';
comment on column reconcile_runs.stale is 'Points whose content hash differs from their row''s.';
comment on column reconcile_runs.repaired is 'Whether the differences were written to the outbox for the relay to repair.';
comment on column reconcile_runs.unowned is 'Points of the collection with no owner (written before owners existed): never deleted automatically; a repair re-writes (adopts) those that have a row.';

create table qdrant_owner (
  singleton boolean primary key default true check (singleton),
  owner_id uuid not null default gen_random_uuid(),
  created_at timestamptz not null default now()
);
insert into qdrant_owner default values;
comment on table qdrant_owner is 'One row: the id this database stamps into every Qdrant point it writes (payload key pgconverge_owner). The reconciler looks only at points with this owner, and never deletes others. A restored copy of a database that shares Qdrant with its original must get a new one: update qdrant_owner set owner_id = gen_random_uuid() (and use a collection of its own).';
comment on column qdrant_owner.singleton is 'Always true: keeps the table to one row.';
comment on column qdrant_owner.owner_id is 'Generated once, when the database is migrated; written as pgconverge_owner into every point''s payload.';
comment on column qdrant_owner.created_at is 'When owner_id was generated.';
