-- Run once, when a database migrated by pgconverge 0.1 is adopted by 0.2 (after 0.1's seven files):
-- the few comments 0.2's baseline words without the reference pipeline's tables, so that an
-- upgraded database and a fresh one have the same schema, comments included.
comment on column reconcile_runs.postgres_points is 'Rows the sync declares in Postgres (points that should exist).';
comment on column reconcile_runs.missing is 'Rows with no point in Qdrant.';
comment on column reconcile_runs.extra is 'Points with no row in Postgres.';
comment on column reconcile_runs.stale is 'Points whose content hash differs from their row''s.';
comment on column reconcile_latest.missing is 'Rows with no point in Qdrant.';
comment on column reconcile_latest.extra is 'Points with no row in Postgres.';
comment on column reconcile_latest.stale is 'Points whose content hash differed from their row''s.';
comment on column reconcile_latest.postgres_points is 'Rows the sync declared in Postgres.';
