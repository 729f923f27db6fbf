-- Any table of the application can be synced to Qdrant (a sync declaration), so the outbox
-- holds integer point ids besides UUIDs; and every point written carries the id of the
-- database that wrote it, so a reconcile never deletes another database's points in a shared
-- Qdrant collection.

-- The view reads outbox.point_id, whose type changes: drop it and make it again, unchanged.
drop view outbox_dead_changes;

alter table outbox alter column point_id type text using point_id::text;
alter table outbox add constraint outbox_point_id_check check (
  point_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
  or (point_id ~ '^(0|[1-9][0-9]{0,15})$' and point_id::numeric <= 9007199254740991)
);
comment on column outbox.point_id is 'Qdrant point id, as text: a UUID (lowercase, with hyphens) or an unsigned integer up to 2^53 - 1 (decimal). One spelling per id, so one row per point.';

create view outbox_dead_changes as
select id, collection, point_id, last_error, attempts, dead_at, created_at
from outbox
where state = 'dead'
order by dead_at desc, id desc;
comment on view outbox_dead_changes is 'Outbox changes the relay gave up on, newest first, with the reason.';
comment on column outbox_dead_changes.id is 'Outbox row id, for `pgconverge outbox retry <id>`.';
comment on column outbox_dead_changes.collection is 'Qdrant collection.';
comment on column outbox_dead_changes.point_id is 'Qdrant point id (a UUID or an unsigned integer).';
comment on column outbox_dead_changes.last_error is 'Why the change could not be applied.';
comment on column outbox_dead_changes.attempts is 'Failed attempts.';
comment on column outbox_dead_changes.dead_at is 'When the change was marked dead.';
comment on column outbox_dead_changes.created_at is 'When the change was first written.';

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

alter table reconcile_runs add column unowned bigint not null default 0 check (unowned >= 0);
comment on column reconcile_runs.unowned is 'Points of the collection with no owner (written before owners existed): never deleted automatically; a repair re-writes (adopts) those that have a row.';
