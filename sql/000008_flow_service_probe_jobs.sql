-- A probe lease of flow_services (sql/000007) names the job whose call is the probe and the
-- graphile-worker lock holder running it, as flow_slots does: the sweeper gives up a lease whose
-- job that holder no longer holds (the prober's worker was killed and its jobs released), so the
-- next call may probe within the dead-worker threshold, not only when the lease runs out.

-- A lease taken before this migration names no job: given up, so that every lease left is
-- whole. A call still running under it records its outcome as any call let through would.
update flow_services set probe_holder = null, probe_until = null where probe_holder is not null;

alter table flow_services
  add column probe_job_id bigint,
  add column probe_locked_by text check (probe_locked_by <> ''),
  -- The lease is whole: its four columns are set together or null together (000007's checks
  -- keep a lease to a half-open circuit).
  add constraint flow_services_probe_lease_whole check (num_nulls(probe_holder, probe_until, probe_job_id, probe_locked_by) in (0, 4));

comment on column flow_services.probe_holder is 'The probe call''s own id (a job may make several calls): the one that may close or reopen the circuit; null when no probe is in flight.';
comment on column flow_services.probe_until is 'When the probe''s lease ends: the probe''s call budget (what is left of its prepare deadline, less the time kept to record its outcome) plus that time. A probe that neither succeeds nor fails by then is given up and another may start; the sweeper gives it up sooner when its job is released.';
comment on column flow_services.probe_job_id is 'The graphile-worker job whose call is the probe; null when no probe is in flight.';
comment on column flow_services.probe_locked_by is 'The graphile-worker lock holder (a worker or its pool, listed in workers.locker_ids) that ran the probe''s job when it took the lease. The sweeper gives up the lease once that job is no longer locked by it (its worker died, or the job ended without recording the probe''s outcome).';

-- Nothing looks flow_slots up by lock holder: a release reads them by job (the primary key
-- starts with job_id) and the sweep reads the table whole against graphile-worker's jobs. The
-- index only made every slot taken and freed write one more index entry.
drop index flow_slots_locked_by_idx;
