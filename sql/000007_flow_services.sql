-- External services shared by the fleet (Ollama, Qdrant, an HTTP API): one row per service
-- holding its rate limit's reservation clock, the pause a 429/Retry-After asked for, and its
-- circuit breaker. Every worker process reads and moves the same row, so the limit, the pause
-- and the breaker hold across processes and machines. Written only through
-- src/flow/serviceQueries.ts; read through flow_services_status.

create table flow_services (
  name text primary key check (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
  rate double precision check (rate > 0 and rate <> 'infinity'),
  burst double precision not null default 0 check (burst >= 0 and burst <> 'infinity'),
  next_free_at timestamptz not null default '-infinity',
  resume_at timestamptz not null default '-infinity',
  paused_until timestamptz,
  state text not null default 'closed' check (state in ('closed', 'open', 'half_open')),
  state_since timestamptz not null default now(),
  consecutive_failures integer not null default 0 check (consecutive_failures >= 0),
  opened_at timestamptz,
  reopen_at timestamptz,
  probe_holder text check (probe_holder <> ''),
  probe_until timestamptz,
  throttled_seconds double precision not null default 0 check (throttled_seconds >= 0),
  last_error text,
  -- An open circuit knows since when and until when; a closed one neither.
  check ((state = 'open') = (reopen_at is not null)),
  check ((state = 'closed') = (opened_at is null)),
  -- A probe lease is whole, and only a half-open circuit has one.
  check ((probe_holder is null) = (probe_until is null)),
  check (probe_holder is null or state = 'half_open')
);
comment on table flow_services is 'One row per external service the fleet calls through callService: its rate limit (a reservation clock every worker moves), the fleet-wide pause a 429/Retry-After asked for, and its circuit breaker (closed, open, half_open with one probe lease). A worker upserts the rows of the services it is configured with at start; a service called without configuration gets a row with no rate limit. Read it through flow_services_status.';
comment on column flow_services.name is 'The service''s name as tasks call it (callService("ollama", ...)) and as FLOW_SERVICE_RATES names it.';
comment on column flow_services.rate is 'Requests (or cost units) per second the whole fleet may send; null: no rate limit (the pause and the breaker still apply). Set by the last worker started with a rate for it.';
comment on column flow_services.burst is 'Cost units that may go at once after a quiet spell, beyond the steady rate; 0 spaces every request by cost/rate.';
comment on column flow_services.next_free_at is 'The reservation clock: a call reserves the turn greatest(next_free_at - burst/rate, now) and moves it on by cost/rate. Only a call that will go within a fraction of a second reserves; later ones are deferred without reserving, so no turn is wasted.';
comment on column flow_services.resume_at is 'The last run time handed to a job deferred because of this service; the next deferred job gets a later one (spaced by cost/rate, or a few ms without a rate), so waiting jobs come back one after another instead of in a burst.';
comment on column flow_services.paused_until is 'Until when the whole fleet sends nothing, because the service answered 429 (for its Retry-After, or a default); null or past: not paused.';
comment on column flow_services.state is 'Circuit breaker: closed (calls go through, failures counted), open (calls are deferred until reopen_at, no attempt used), half_open (one probe call, holding the lease, finds out whether the service is back).';
comment on column flow_services.state_since is 'When the breaker entered its state.';
comment on column flow_services.consecutive_failures is 'Breaker-worthy failures (connection refused, 5xx, timeouts) since the last success; at BREAKER_FAILURE_THRESHOLD the circuit opens.';
comment on column flow_services.opened_at is 'When the circuit first opened in this outage (kept through failed probes); null when closed.';
comment on column flow_services.reopen_at is 'While open: when a probe may try the service again (now + BREAKER_OPEN_MS at each opening); null otherwise.';
comment on column flow_services.probe_holder is 'The job whose call is the probe of a half-open circuit; null when no probe is in flight.';
comment on column flow_services.probe_until is 'When the probe''s lease ends: a probe that neither succeeds nor fails by then (its worker died) is given up and another may start.';
comment on column flow_services.throttled_seconds is 'Seconds calls have waited for this service so far, summed over calls: sleeps before a reserved turn plus the delay of every deferred job.';
comment on column flow_services.last_error is 'The last breaker-worthy failure, one line, for status.';

create view flow_services_status as
select
  name,
  rate,
  burst,
  state,
  state_since,
  extract(epoch from clock_timestamp() - state_since)::float8 as state_age_s,
  consecutive_failures,
  opened_at,
  reopen_at,
  case when paused_until > clock_timestamp() then paused_until end as paused_until,
  probe_holder is not null and probe_until > clock_timestamp() as probe_in_flight,
  throttled_seconds,
  last_error
from flow_services;
comment on view flow_services_status is 'Per external service: breaker state and since when, the fleet-wide pause (if any), whether a probe is in flight, and the time calls spent throttled. What pgconverge status and /metrics report.';
comment on column flow_services_status.name is 'The service''s name.';
comment on column flow_services_status.rate is 'Requests or cost units per second for the fleet; null: unlimited.';
comment on column flow_services_status.burst is 'Cost units allowed at once after a quiet spell.';
comment on column flow_services_status.state is 'closed, open or half_open.';
comment on column flow_services_status.state_since is 'When the breaker entered this state.';
comment on column flow_services_status.state_age_s is 'Seconds in this state.';
comment on column flow_services_status.consecutive_failures is 'Breaker-worthy failures since the last success.';
comment on column flow_services_status.opened_at is 'When the circuit opened in this outage; null when closed.';
comment on column flow_services_status.reopen_at is 'While open: when the next probe may go.';
comment on column flow_services_status.paused_until is 'Until when a 429 paused the fleet; null when not paused.';
comment on column flow_services_status.probe_in_flight is 'Whether a probe call holds a live lease.';
comment on column flow_services_status.throttled_seconds is 'Seconds calls have spent waiting for this service (sleeps and deferrals), summed.';
comment on column flow_services_status.last_error is 'The last breaker-worthy failure.';
