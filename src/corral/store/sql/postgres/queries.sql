-- Named queries for the PostgreSQL store. Every name here exists in sql/sqlite/queries.sql too
-- (tests/unit/test_sql_files.py checks it). Parameters are :name.

-- fragment: vtime_floor
-- What a tenant that becomes eligible again (runs queued after none, below its cap again) is
-- lifted to, at least: the lowest vtime among the eligible tenants, or the highest vtime when
-- none is eligible. So idle or capped time banks no credit (docs/fairness.md).
COALESCE((SELECT MIN(b.vtime) FROM corral_tenants b WHERE b.queued > 0 AND b.in_flight < b.cap),
         (SELECT MAX(b.vtime) FROM corral_tenants b))

-- fragment: lease_order
-- The order in which a lease ranks candidate tenants (alias t): the first start tag, as
-- dispatch.allocate orders them. It is the key of corral_tenants_lease_order (migration 009),
-- so a lease reads as many tenants as it takes, however many are tied on vtime.
t.vtime, t.in_flight / t.weight, t.last_served_at, t.tenant

-- fragment: start_tag_order
-- The order in which the one-statement leases hand out slots (CTE locked as l, k the slots
-- granted before): lowest start tag first, as dispatch.allocate does.
l.vtime + k * l.charge, (l.in_flight + k) / l.weight, l.vtime, l.last_served_at, l.tenant

-- fragment: work_channel
-- The channel that announces work made available (the payload, when set: the fewest runs in
-- flight of a tenant with work). One per schema: notifications are database-wide, and a corral
-- in another schema of the same database must not wake this one's workers.
'corral_work_' || md5(current_schema())

-- fragment: grants_channel
-- The channel of grants of shared resources (resources.sql; the payload names the resource
-- and the granted requests), one per schema like work_channel.
'corral_grants_' || md5(current_schema())

-- fragment: can_lease
-- Whether a lease may take runs of the tenant row t now: below its cap, and not weighted out.
-- What decides, at submit, between waking the waiting workers and leaving them be.
(t.in_flight < t.cap AND t.weight > 0)

-- fragment: handing
-- submit_one: whether the run is handed to the idle worker of CTE offer (the tenant row t as
-- locked: its newest version)
(t.queued = 0 AND {{can_lease}} AND EXISTS (SELECT 1 FROM offer))

-- fragment: handoff_channel
-- The channel on which a worker (x.lease_owner) hears of the runs handed to it; per schema
-- as work_channel is. The worker's store LISTENs to it (handoff_channel query).
'corral_run_' || md5(current_schema() || ' ' || x.lease_owner)

-- fragment: db_now
-- The database server's clock, in seconds since the epoch: for times that processes on
-- different machines compare (handoff offers' ages), which their own clocks could skew.
extract(epoch FROM statement_timestamp())::float8

-- fragment: first_start_by
-- A lease's start_by, in the RETURNING of the update that takes it: the run's deadline for
-- its first start, given only with the lease that starts it (started_at was set by this very
-- update). A run that suspended, was released or failed an attempt has started already,
-- though its attempt count may be back at 0.
CASE WHEN started_at = leased_at THEN start_by END AS start_by

-- name: listen_channels
-- what a store's listening connection LISTENs to (postgres.py)
SELECT {{work_channel}}, {{grants_channel}};

-- name: insert_run
INSERT INTO corral_runs (id, tenant, agent, input, status, priority, sort_key, available_at,
    max_attempts, idempotency_key, parent_id, root_id, depth, budget, timeout, start_by,
    created_at, journal_seq)
VALUES (:id, :tenant, :agent, :input, 'queued', :priority, :sort_key, :available_at,
    :max_attempts, :idempotency_key, :parent_id, :root_id, :depth, :budget, :timeout, :start_by,
    :now, 1)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: submit_one
-- submit of one run without an idempotency key, in one statement: count it against the
-- tenant's quota (lifting its vtime as reserve_queued does), insert it and its first journal
-- entry, and either hand it to an idle worker or wake the workers, when a lease could take the
-- run now (not for a tenant at its cap, or a run due later: every waiting worker would wake to
-- find nothing; the ack that frees the tenant a slot wakes them, and delayed runs are found by
-- the workers' polls, as with any submit). No row back: the tenant is
-- new or over its quota, and nothing was written (the caller then takes the general path,
-- which creates the tenant or refuses).
-- The handoff (docs/architecture.md): when a live worker offers a free slot, the run is due
-- and the tenant, below its cap, has nothing else queued (so the run is what a fair lease
-- would take next), the run is stored already leased to that worker, charged to its tenant
-- as a lease is (lease_fast's served), and the notification on the worker's own channel
-- carries the lease: the first JSON array below, a newline, then the input. Runs whose lease
-- would not fit a notification (8,000 bytes) are not handed. A tenant row updated with
-- nothing newly queued is a handoff: reserved.queued = 0 then, and only then.
WITH offer AS (
    SELECT w.owner, w.ttl FROM corral_idle_workers w
    WHERE w.slots > 0 AND :available_at::float8 <= :now::float8
      AND octet_length(:input::text) + 4 * octet_length(:tenant::text || :agent::text) < 7000
      AND NOT EXISTS (SELECT 1 FROM corral_settings s
                      WHERE s.key = 'global_cap' AND s.value IS NOT NULL)
      AND NOT pg_try_advisory_xact_lock_shared(w.lock_key)
      AND w.offered_at > {{db_now}} - :offer_lifetime::float8
    ORDER BY w.offered_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), reserved AS (
    UPDATE corral_tenants t SET
        queued = t.queued + CASE WHEN {{handing}} THEN 0 ELSE 1 END,
        in_flight = t.in_flight + CASE WHEN {{handing}} THEN 1 ELSE 0 END,
        vtime = CASE WHEN t.queued = 0 THEN GREATEST(t.vtime, {{vtime_floor}}) ELSE t.vtime END
            + CASE WHEN {{handing}} THEN GREATEST(t.run_cost, :min_cost::float8) / t.weight ELSE 0 END,
        last_served_at = CASE WHEN {{handing}} THEN :now::float8 ELSE t.last_served_at END,
        handed = t.handed + CASE WHEN {{handing}} THEN 1 ELSE 0 END
    WHERE t.tenant = :tenant AND t.queued + 1 <= t.max_queued
    RETURNING t.tenant, t.in_flight, t.queued,
        {{can_lease}} AND :available_at::float8 <= :now::float8 AS leasable
), run AS (
    INSERT INTO corral_runs (id, tenant, agent, input, status, priority, sort_key, available_at,
        max_attempts, root_id, depth, budget, timeout, start_by, created_at, journal_seq,
        attempts, lease_epoch, lease_owner, lease_expires_at, started_at, leased_at)
    SELECT :id::text, r.tenant, :agent::text, :input::text,
        CASE WHEN h.owner IS NULL THEN 'queued' ELSE 'running' END, :priority::int,
        :sort_key::float8, :available_at::float8, :max_attempts::int, :id::text, 0,
        :budget::float8, :timeout::float8, :start_by::float8, :now::float8, 1,
        CASE WHEN h.owner IS NULL THEN 0 ELSE 1 END, CASE WHEN h.owner IS NULL THEN 0 ELSE 1 END,
        h.owner, :now::float8 + h.ttl,
        CASE WHEN h.owner IS NOT NULL THEN :now::float8 END,
        CASE WHEN h.owner IS NOT NULL THEN :now::float8 END
    FROM reserved r LEFT JOIN offer h ON r.queued = 0
    RETURNING id, lease_epoch, tenant, agent, attempts, max_attempts, lease_expires_at, root_id,
        parent_id, depth, journal_seq, timeout, start_by, lease_owner
), entry AS (
    INSERT INTO corral_journal (run_id, seq, kind, name, data, epoch, created_at)
    SELECT id, 1, 'submitted', :agent::text, NULL, 0, :now::float8 FROM run
), used AS (
    UPDATE corral_idle_workers w SET slots = w.slots - 1 FROM run WHERE w.owner = run.lease_owner
)
SELECT x.id, CASE WHEN x.lease_owner IS NOT NULL
    THEN pg_notify({{handoff_channel}},
        json_build_array(x.id, x.lease_epoch, x.tenant, x.agent, x.attempts, x.max_attempts,
            x.lease_expires_at, x.root_id, x.parent_id, x.depth, x.journal_seq, x.timeout,
            x.start_by)::text
        || chr(10) || :input::text)
    WHEN (SELECT leasable FROM reserved)
    THEN pg_notify({{work_channel}}, (SELECT in_flight FROM reserved)::text) END,
    x.lease_owner IS NOT NULL AS handed
FROM run x;

-- name: schedule_first_seen
-- A schedule seen for the first time starts at the tick it is first seen at, without a run
-- (its runs begin with the next tick: a "0 9 * * *" schedule deployed at 09:30 first runs the
-- day after). No row back: the schedule was seen before.
INSERT INTO corral_schedules (name, last_tick) VALUES (:name, :tick)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- name: claim_tick
-- The one caller that moves the schedule to :tick submits its run (in the same transaction).
-- A concurrent caller waits for the row, then finds the tick taken.
UPDATE corral_schedules SET last_tick = :tick, run_tick = :tick, next_tick = :next
WHERE name = :name AND last_tick < :tick
RETURNING name;

-- name: skip_tick
-- A tick too late to make up for: the schedule moves past it without a run.
UPDATE corral_schedules SET last_tick = :tick, next_tick = :next
WHERE name = :name AND last_tick < :tick;

-- name: claim_stored_tick
-- claim_tick for a schedule created at run time: only while its row still holds the
-- definition the caller read (a deleted or replaced schedule gets no run from a stale worker)
UPDATE corral_schedules SET last_tick = :tick, run_tick = :tick, next_tick = :next
WHERE name = :name AND last_tick < :tick AND definition = :definition AND paused_at IS NULL
RETURNING name;

-- name: skip_stored_tick
-- skip_tick for a schedule created at run time, as claim_stored_tick: a stale worker's skip
-- must not move a replaced schedule to the ticks of the one it read
UPDATE corral_schedules SET last_tick = :tick, next_tick = :next
WHERE name = :name AND last_tick < :tick AND definition = :definition;

-- name: schedule_marks
-- Without a lock: the last ticks of the schedules named in :names (a JSON array), so that a
-- worker offering ticks another has taken already need not take the write lock for them
SELECT name, last_tick FROM corral_schedules WHERE name IN (SELECT jsonb_array_elements_text(CAST(:names AS jsonb)));

-- name: tick_savepoint
-- One tenant's ticks in a batch (Store.submit_ticks): a tenant over its quota of queued runs
-- gives its ticks back, and the other tenants' runs stay
SAVEPOINT corral_tenant_ticks;

-- name: tick_rollback
ROLLBACK TO SAVEPOINT corral_tenant_ticks;

-- name: tick_release
RELEASE SAVEPOINT corral_tenant_ticks;

-- name: schedule_ticks
-- the schedules in code, and those stored (:tenant's only, if given; none with :code_only)
SELECT name, last_tick, run_tick FROM corral_schedules
WHERE definition IS NULL
   OR (NOT CAST(:code_only AS BOOLEAN) AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant))
ORDER BY name;

-- name: count_stored_schedules
SELECT COUNT(*) FROM corral_schedules WHERE tenant = :tenant AND definition IS NOT NULL;

-- name: insert_stored_schedule
-- A schedule created at run time starts at its latest tick, without a run (as a schedule in
-- code does when first seen). No row back: the name is taken.
INSERT INTO corral_schedules (name, last_tick, next_tick, tenant, definition, created_at)
VALUES (:name, :tick, :next, :tenant, :definition, :now)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- name: delete_stored_schedule
DELETE FROM corral_schedules WHERE name = :name AND definition IS NOT NULL RETURNING name;

-- name: stored_schedules
SELECT name, tenant, definition, paused_at FROM corral_schedules
WHERE definition IS NOT NULL AND (CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)
ORDER BY name;

-- name: stored_schedule_counts
SELECT COUNT(*) - COUNT(paused_at), COUNT(paused_at) FROM corral_schedules
WHERE definition IS NOT NULL;

-- name: due_schedules
-- the stored schedules that run and whose next tick is at or before :until (or overdue)
SELECT name, tenant, definition, paused_at FROM corral_schedules
WHERE definition IS NOT NULL AND paused_at IS NULL AND next_tick <= :until
ORDER BY next_tick;

-- name: pause_stored_schedule
UPDATE corral_schedules SET paused_at = COALESCE(paused_at, :now)
WHERE name = :name AND definition IS NOT NULL
RETURNING name;

-- name: resume_stored_schedule
-- A resumed schedule starts again at its latest tick, as a new one does: the ticks it was
-- paused through are not made up for.
UPDATE corral_schedules
SET paused_at = NULL,
    last_tick = CASE WHEN paused_at IS NULL THEN last_tick ELSE :tick END,
    next_tick = CASE WHEN paused_at IS NULL THEN next_tick ELSE :next END
WHERE name = :name AND definition = :definition
RETURNING name;

-- name: stored_schedule
SELECT name, tenant, definition, paused_at FROM corral_schedules
WHERE name = :name AND definition IS NOT NULL;

-- name: find_by_idempotency_key
SELECT id FROM corral_runs WHERE tenant = :tenant AND idempotency_key = :idempotency_key;

-- name: insert_journal
INSERT INTO corral_journal (run_id, seq, kind, name, data, epoch, created_at)
VALUES (:run_id, :seq, :kind, :name, :data, :epoch, :now);

-- name: ensure_tenant
INSERT INTO corral_tenants (tenant, plan, cap, weight, max_queued)
SELECT :tenant, p.name, p.cap, p.weight, p.max_queued FROM corral_plans p WHERE p.name = :plan
ON CONFLICT (tenant) DO NOTHING;

-- name: reserve_queued
-- A tenant that starts queueing again is lifted to the eligible tenants' lowest vtime (or,
-- when none is eligible, to the highest vtime): idle time banks no credit (docs/fairness.md).
-- The second column: whether a lease could take the tenant's runs now (below its cap).
UPDATE corral_tenants AS t SET queued = queued + :n,
    vtime = CASE WHEN queued = 0 THEN GREATEST(vtime, {{vtime_floor}}) ELSE vtime END
WHERE tenant = :tenant AND queued + :n <= max_queued
RETURNING queued, {{can_lease}};

-- name: adjust_tenant
-- A tenant that becomes eligible again (runs queued, below its cap) is lifted as in
-- reserve_queued: idle or capped time banks no credit. :cost, when not negative, is the mean
-- lease time of this tenant's runs that just ended.
UPDATE corral_tenants SET queued = queued + :queued, in_flight = in_flight + :in_flight,
    succeeded = succeeded + :succeeded, failed = failed + :failed,
    cancelled = cancelled + :cancelled, redelivered = redelivered + :redelivered,
    expiry_dead_letters = expiry_dead_letters + :expiry_dead_letters,
    vtime = CASE WHEN (queued = 0 AND :queued > 0)
                   OR (in_flight >= cap AND in_flight + :in_flight < cap AND queued + :queued > 0)
              THEN GREATEST(vtime, {{vtime_floor}}) ELSE vtime END,
    run_cost = CASE WHEN :cost::float8 < 0 THEN run_cost ELSE 0.8 * run_cost + 0.2 * :cost::float8 END
WHERE tenant = :tenant
RETURNING queued;

-- name: settle_tenant
UPDATE corral_tenants SET queued = queued + :queued, in_flight = in_flight + :in_flight,
    succeeded = succeeded + :succeeded, failed = failed + :failed,
    cancelled = cancelled + :cancelled, redelivered = redelivered + :redelivered,
    expiry_dead_letters = expiry_dead_letters + :expiry_dead_letters,
    last_served_at = CASE WHEN :served = 1 THEN :now ELSE last_served_at END,
    vtime = CASE WHEN (queued = 0 AND :queued > 0)
                   OR (in_flight >= cap AND in_flight + :in_flight < cap AND queued + :queued > 0)
              THEN GREATEST(vtime, {{vtime_floor}}) ELSE vtime END + :charge::float8
WHERE tenant = :tenant;

-- name: lock_tenant
SELECT tenant, in_flight, cap, weight, queued, vtime, run_cost FROM corral_tenants
WHERE tenant = :tenant
FOR UPDATE;

-- name: tenant_load
-- lock_tenant without the lock: the counters of a tenant a lease has just requeued runs of,
-- to rank it among the candidates before the tenant rows are locked (in sorted order)
SELECT tenant, in_flight, cap, weight, queued, vtime, run_cost FROM corral_tenants
WHERE tenant = :tenant;

-- name: get_run
SELECT * FROM corral_runs WHERE id = :id;

-- name: list_runs
-- {filters}: the conditions of the filters given, joined by AND (sql_queue.list_runs). A
-- filter not given is left out of the text rather than written "(:x IS NULL OR ...)", which
-- no plan can serve from an index: a tenant's page walks corral_runs_listing (tenant, id).
SELECT * FROM corral_runs
WHERE {filters}
ORDER BY id DESC
LIMIT :limit;

-- name: select_expired
SELECT id FROM corral_runs
WHERE status = 'running' AND lease_expires_at <= :now
ORDER BY lease_expires_at
LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- name: expire_run
UPDATE corral_runs SET
    status = CASE WHEN cancel_requested = 1 THEN 'cancelled'
                  WHEN attempts >= max_attempts THEN 'failed'
                  ELSE 'queued' END,
    error = CASE WHEN cancel_requested = 1 THEN error
                 WHEN attempts >= max_attempts THEN :error
                 ELSE error END,
    finished_at = CASE WHEN cancel_requested = 1 OR attempts >= max_attempts THEN :now END,
    available_at = :now,
    lease_owner = NULL,
    lease_expires_at = NULL,
    journal_seq = journal_seq + 1
WHERE id = :id AND status = 'running' AND lease_expires_at <= :now
RETURNING tenant, status, parent_id, journal_seq, attempts, lease_epoch;

-- name: expiry_entry
-- the journal's record of an expired lease (seq reserved by expire_run); written by the
-- store, not by a lease holder, so its epoch is 0 like the submit's entry
INSERT INTO corral_journal (run_id, seq, kind, name, data, epoch, created_at)
VALUES (:id, :seq, 'lease_expired', NULL, :data, 0, :now);

-- name: global_cap
SELECT value FROM corral_settings WHERE key = 'global_cap'
FOR UPDATE;

-- name: read_global_cap
-- the global cap as statistics read it (no lock: they change nothing)
SELECT value FROM corral_settings WHERE key = 'global_cap';

-- name: total_in_flight
SELECT COALESCE(SUM(in_flight), 0) FROM corral_tenants;

-- name: candidate_tenants
SELECT t.tenant, t.in_flight, t.cap, t.weight, t.queued, t.vtime, t.run_cost
FROM corral_tenants t
-- LATERAL ... LIMIT 1, not EXISTS: the planner may turn an EXISTS into a hash of every queued
-- run (all of them, on every lease); this probes each candidate's index entries instead. The
-- ORDER BY is the order of corral_runs_queued_age, so the probe is its first entry whatever
-- the statistics say: without it, statistics that guess thousands of runs for every tenant
-- made a sequential scan look likely to meet one at once (it read the whole backlog of the
-- busiest tenant, once per small tenant, on every lease)
CROSS JOIN LATERAL (SELECT 1 FROM corral_runs r
                    WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at <= :now
                    ORDER BY r.available_at
                    LIMIT 1) ready
WHERE t.queued > 0 AND t.in_flight < t.cap AND t.in_flight < :light_below
ORDER BY {{lease_order}}
LIMIT :limit;

-- name: take_tenant_runs
-- a tenant's next :n runnable runs (priority with aging, then age), leased in one statement
UPDATE corral_runs SET
    status = 'running',
    attempts = attempts + 1,
    lease_epoch = lease_epoch + 1,
    lease_owner = :owner,
    lease_expires_at = :expires_at,
    started_at = COALESCE(started_at, :now),
    leased_at = :now
WHERE id IN (
    SELECT id FROM corral_runs
    WHERE tenant = :tenant AND status = 'queued' AND available_at <= :now
    ORDER BY sort_key
    LIMIT :n
    FOR UPDATE SKIP LOCKED
)
RETURNING id, lease_epoch, tenant, agent, input, attempts, max_attempts, lease_expires_at,
    root_id, parent_id, depth, journal_seq, timeout, {{first_start_by}}, sort_key;

-- name: pick_oldest_runs
-- fairness off (for comparison): oldest first across tenants, skipping tenants at their cap
-- and those in :full (a JSON array: tenants this lease has just filled to their cap). The :n
-- oldest runs are among the first :n of the :n tenants whose first runs are oldest, each read
-- in order from the tenant's own queue (corral_runs_ready): a merge of the tenants' queues,
-- so that no index of every queued run is kept up to date for this mode alone. Runs with equal
-- sort keys go in the order of their row versions (ctid), the order the index keeps them in.
WITH heads AS (
    SELECT t.tenant, h.sort_key, h.ctid AS seq FROM corral_tenants t
    CROSS JOIN LATERAL (SELECT r.sort_key, r.ctid FROM corral_runs r
                        WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at <= :now
                        ORDER BY r.sort_key
                        LIMIT 1) h
    WHERE t.queued > 0 AND t.in_flight < t.cap
      AND t.tenant NOT IN (SELECT jsonb_array_elements_text(:full::jsonb))
    ORDER BY h.sort_key, h.ctid
    LIMIT :n
)
SELECT p.id, p.tenant FROM heads
CROSS JOIN LATERAL (
    SELECT r.id, r.tenant, r.sort_key, r.ctid AS seq FROM corral_runs r
    WHERE r.tenant = heads.tenant AND r.status = 'queued' AND r.available_at <= :now
    ORDER BY r.sort_key
    LIMIT :n
    FOR UPDATE SKIP LOCKED
) p
ORDER BY p.sort_key, p.seq
LIMIT :n;

-- name: tenant_headroom
SELECT tenant, cap - in_flight FROM corral_tenants WHERE tenant = :tenant
FOR UPDATE;

-- name: use_generic_plans
-- for the rest of the transaction, prepared statements (psycopg prepares a statement on its
-- fifth run on a connection) reuse their generic plan instead of planning every run
SET LOCAL plan_cache_mode = force_generic_plan;

-- fragment: pick_allocated
-- The one-statement leases' runs: each allocated tenant's first ``n`` runs due, in its
-- order, skipping runs another lease holds (CTE ``alloc``: tenant, n).
SELECT p.id FROM alloc a
CROSS JOIN LATERAL (
    SELECT r.id FROM corral_runs r
    WHERE r.tenant = a.tenant AND r.status = 'queued' AND r.available_at <= :now
    ORDER BY r.sort_key
    LIMIT a.n
    FOR UPDATE SKIP LOCKED
) p

-- fragment: take_picked
-- The one-statement leases' take of the runs in CTE ``picked``; its columns are what
-- lease_from_row reads (sql_lease.py), sort_key last.
UPDATE corral_runs SET status = 'running', attempts = attempts + 1,
    lease_epoch = lease_epoch + 1, lease_owner = :owner, lease_expires_at = :expires_at,
    started_at = COALESCE(started_at, :now), leased_at = :now
WHERE id = ANY(ARRAY(SELECT id FROM picked))
RETURNING id, lease_epoch, tenant, agent, input, attempts, max_attempts, lease_expires_at,
    root_id, parent_id, depth, journal_seq, timeout, {{first_start_by}}, sort_key

-- fragment: ack_parentless
-- The one-statement acks (ack_fast, ack_lease_fast): the fenced end of each acked run that
-- has no parent to wake (a parent needs the general path). The status test is written
-- under COLLATE "C" for the reason ack_runs_batch gives.
UPDATE corral_runs r SET status = 'succeeded', result = a.result, finished_at = :now,
    error = NULL, lease_owner = NULL, lease_expires_at = NULL
FROM unnest(:ids::text[], :epochs::bigint[], :results::text[]) AS a(id, epoch, result)
WHERE r.id = a.id AND r.lease_epoch = a.epoch AND r.status COLLATE "C" = 'running'
  AND r.lease_expires_at > :now AND r.parent_id IS NULL
RETURNING r.id, r.tenant, r.leased_at

-- name: lease_fast
-- The whole fair lease in one statement (one round trip), for the common case: no global cap,
-- no maintenance due (see sql_lease.py). Written so that its generic plan is as good as a
-- custom one (= ANY(ARRAY(...)) keeps every row lookup on an index whatever the estimates),
-- so the lease runs it as a prepared statement with plan_cache_mode = force_generic_plan and
-- skips planning (a custom plan costs about as much to plan as to run). The same steps as the general path: candidates from
-- the snapshot; their rows locked in sorted order (fresh counters: FOR UPDATE returns the
-- newest version); the slots handed out by lowest start tag, as dispatch.allocate does; runs
-- taken with SKIP LOCKED; counters and vtime charged. ``wanted`` (slots allocated) against the
-- rows returned tells the caller whether a tenant came up short. :light_below limits the lease
-- to tenants with fewer runs in flight, and each to that many (a worker's express slots).
WITH cand AS (
    SELECT t.tenant FROM corral_tenants t
    CROSS JOIN LATERAL (SELECT 1 FROM corral_runs r  -- not EXISTS: see candidate_tenants
                        WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at <= :now
                        ORDER BY r.available_at
                        LIMIT 1) ready
    WHERE t.queued > 0 AND t.in_flight < t.cap AND t.in_flight < :light_below
    ORDER BY {{lease_order}}
    LIMIT :slots
), locked AS (
    SELECT t.tenant, t.in_flight, t.cap, t.weight, t.queued, t.vtime, t.last_served_at,
        GREATEST(t.run_cost, :min_cost::float8) / t.weight AS charge
    FROM corral_tenants t
    WHERE t.tenant = ANY(ARRAY(SELECT tenant FROM cand))
    ORDER BY t.tenant
    FOR UPDATE
), tags AS (
    SELECT l.tenant
    FROM locked l
    CROSS JOIN LATERAL generate_series(
        0, LEAST(l.cap - l.in_flight, l.queued, :slots, :light_below - l.in_flight) - 1) AS k
    WHERE l.weight > 0
    ORDER BY {{start_tag_order}}
    LIMIT :slots
), alloc AS (
    SELECT tenant, count(*) AS n FROM tags GROUP BY tenant
), picked AS (
    {{pick_allocated}}
), taken AS (
    {{take_picked}}
), served AS (
    UPDATE corral_tenants t SET
        in_flight = t.in_flight + s.n,
        queued = t.queued - s.n,
        vtime = t.vtime + s.n * GREATEST(t.run_cost, :min_cost::float8) / t.weight,
        last_served_at = :now,
        redelivered = t.redelivered + s.again
    FROM (SELECT tenant, count(*) AS n, count(*) FILTER (WHERE attempts > 1) AS again
          FROM taken GROUP BY tenant) s
    WHERE t.tenant = ANY(ARRAY(SELECT tenant FROM taken)) AND t.tenant = s.tenant
    RETURNING t.tenant
), offered AS (
    -- slots this worker offered for handoffs that the lease just filled (offer_taken)
    UPDATE corral_idle_workers w SET slots = GREATEST(w.slots - (SELECT count(*) FROM taken), 0)
    WHERE w.owner = :owner AND w.slots > 0 AND EXISTS (SELECT 1 FROM taken)
)
SELECT x.id, x.lease_epoch, x.tenant, x.agent, x.input, x.attempts, x.max_attempts,
    x.lease_expires_at, x.root_id, x.parent_id, x.depth, x.journal_seq, x.timeout, x.start_by,
    (SELECT COALESCE(sum(n), 0) FROM alloc) AS wanted
FROM (SELECT 1) one
LEFT JOIN taken x ON true
ORDER BY x.sort_key;

-- name: lease_run
UPDATE corral_runs SET
    status = 'running',
    attempts = attempts + 1,
    lease_epoch = lease_epoch + 1,
    lease_owner = :owner,
    lease_expires_at = :expires_at,
    started_at = COALESCE(started_at, :now),
    leased_at = :now
WHERE id = :id AND status = 'queued'
RETURNING id, lease_epoch, tenant, agent, input, attempts, max_attempts, lease_expires_at,
    root_id, parent_id, depth, journal_seq, timeout, {{first_start_by}};

-- name: heartbeat_run
UPDATE corral_runs SET lease_expires_at = :expires_at
WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now
RETURNING id, cancel_requested;

-- name: ack_run
UPDATE corral_runs SET status = 'succeeded', result = :result, finished_at = :now,
    error = NULL, lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now
RETURNING tenant, parent_id, leased_at;

-- name: ack_runs_batch
-- ack_run for a whole batch in one statement: the server plans and runs one UPDATE, not one
-- per run. Rows whose lease was lost are simply not returned. Each run is found through the
-- primary key, one probe per array element. The status test is written under COLLATE "C" (the
-- same equality) so that it cannot match the predicate of the partial index corral_runs_leased:
-- with it, the generic plan ANDed the primary key lookups with a scan of that whole index,
-- every running run, which cost more than the update itself.
UPDATE corral_runs r SET status = 'succeeded', result = a.result, finished_at = :now,
    error = NULL, lease_owner = NULL, lease_expires_at = NULL
FROM unnest(:ids::text[], :epochs::bigint[], :results::text[]) AS a(id, epoch, result)
WHERE r.id = a.id AND r.lease_epoch = a.epoch AND r.status COLLATE "C" = 'running'
  AND r.lease_expires_at > :now
RETURNING r.id, r.tenant, r.parent_id, r.leased_at;

-- name: ack_fast
-- ack_runs_batch plus the tenant counters, in one statement, for runs without a parent (a
-- parent to wake needs the general path): lock the tenants in sorted order, count their runs
-- down, learn their run cost, lift a tenant this frees from its cap (as adjust_tenant does),
-- and wake idle workers when a tenant still has runs queued (the payload: the fewest runs such
-- a tenant has in flight, for workers waiting with express slots only). Rows back: the runs
-- acked.
WITH done AS (
    {{ack_parentless}}
), per AS (
    SELECT tenant, count(*) AS n, avg(GREATEST(:now::float8 - leased_at, 0)) AS cost
    FROM done GROUP BY tenant
), locked AS (
    SELECT t.tenant FROM corral_tenants t
    WHERE t.tenant = ANY(ARRAY(SELECT tenant FROM per))
    ORDER BY t.tenant
    FOR UPDATE
), counted AS (
    UPDATE corral_tenants t SET in_flight = t.in_flight - p.n, succeeded = t.succeeded + p.n,
        vtime = CASE WHEN t.in_flight >= t.cap AND t.in_flight - p.n < t.cap AND t.queued > 0
                  THEN GREATEST(t.vtime, {{vtime_floor}})
                  ELSE t.vtime END,
        run_cost = CASE WHEN p.cost IS NULL THEN t.run_cost ELSE 0.8 * t.run_cost + 0.2 * p.cost END
    FROM per p
    WHERE t.tenant = ANY(ARRAY(SELECT tenant FROM locked)) AND t.tenant = p.tenant
    RETURNING t.queued, t.in_flight
), woken AS (
    SELECT pg_notify({{work_channel}}, min(in_flight)::text) FROM counted WHERE queued > 0
    HAVING count(*) > 0
)
SELECT d.id, (SELECT count(*) FROM woken) FROM done d;

-- name: ack_lease_fast
-- ack_fast, then lease_fast, as one statement: a worker whose runs just ended acks them and
-- leases their slots again in one round trip and one commit (one durable commit per run at
-- concurrency 1, instead of two). The steps are those of the two statements, in that order:
-- the acked runs end first (run rows, then tenant rows in sorted order). The tenants the ack
-- touches are not ranked on their counters from before it (cand leaves them out): each is a
-- candidate when it has a ready run, with its in-flight count net of the ack and its vtime
-- lifted as ack_fast lifts it (the floor read before this statement's changes, as ack_fast
-- reads it), and tags ranks it with the others. One UPDATE per table writes both steps'
-- changes (a row is updated at most once per statement). The lease charges the run cost as
-- it stood before the ack's update of it. Runs with a parent are not acked here (as in
-- ack_fast). Rows back: the runs leased (taken's columns), ``wanted`` (as lease_fast; NULL
-- for none), the ids acked, and the notification count. psycopg parses a statement over
-- 4,096 characters on every call: this one is written tersely to stay under (test).
WITH done AS (
    {{ack_parentless}}
), per AS (
    SELECT tenant, count(*) AS n, avg(GREATEST(:now::float8 - leased_at, 0)) AS cost
    FROM done GROUP BY tenant
), cand AS (
    SELECT t.tenant FROM corral_tenants t
    CROSS JOIN LATERAL (SELECT 1 FROM corral_runs r
                        WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at <= :now
                        ORDER BY r.available_at
                        LIMIT 1) ready
    WHERE t.queued > 0 AND t.in_flight < t.cap AND t.tenant NOT IN (SELECT tenant FROM per)
    ORDER BY {{lease_order}}
    LIMIT :slots
), locked AS (
    SELECT t.tenant, t.in_flight - COALESCE(p.n, 0) AS in_flight, t.cap, t.weight, t.queued,
        CASE WHEN t.in_flight >= t.cap AND t.in_flight - p.n < t.cap AND t.queued > 0
          THEN GREATEST(t.vtime, {{vtime_floor}}) ELSE t.vtime END AS vtime,
        t.last_served_at, GREATEST(t.run_cost, :min_cost::float8) / t.weight AS charge,
        p.n IS NULL OR (SELECT true FROM corral_runs r WHERE r.tenant = t.tenant  -- not EXISTS
            AND r.status = 'queued' AND r.available_at <= :now ORDER BY r.available_at LIMIT 1)
            AS candidate
    FROM corral_tenants t
    LEFT JOIN per p ON p.tenant = t.tenant
    WHERE t.tenant = ANY(ARRAY(SELECT tenant FROM cand UNION SELECT tenant FROM per))
    ORDER BY t.tenant
    FOR UPDATE OF t
), tags AS (
    SELECT l.tenant
    FROM locked l
    CROSS JOIN LATERAL generate_series(
        0, LEAST(l.cap - l.in_flight, l.queued, :slots) - 1) AS k
    WHERE l.weight > 0 AND l.candidate
    ORDER BY {{start_tag_order}}
    LIMIT :slots
), alloc AS (
    SELECT tenant, count(*) AS n FROM tags GROUP BY tenant
), picked AS (
    {{pick_allocated}}
), taken AS (
    {{take_picked}}
), changes AS (
    SELECT l.tenant, l.vtime, l.charge, COALESCE(s.n, 0) AS leased, COALESCE(s.again, 0) AS again,
        COALESCE(p.n, 0) AS acked, p.cost
    FROM locked l
    LEFT JOIN (SELECT tenant, count(*) AS n, count(*) FILTER (WHERE attempts > 1) AS again
               FROM taken GROUP BY tenant) s ON s.tenant = l.tenant
    LEFT JOIN per p ON p.tenant = l.tenant
    WHERE COALESCE(s.n, p.n) IS NOT NULL
), settled AS (
    UPDATE corral_tenants t SET
        in_flight = t.in_flight + c.leased - c.acked,
        queued = t.queued - c.leased,
        succeeded = t.succeeded + c.acked,
        vtime = c.vtime + c.leased * c.charge,
        run_cost = COALESCE(0.8 * t.run_cost + 0.2 * c.cost, t.run_cost),
        last_served_at = CASE WHEN c.leased > 0 THEN :now ELSE t.last_served_at END,
        redelivered = t.redelivered + c.again
    FROM changes c
    WHERE t.tenant = ANY(ARRAY(SELECT tenant FROM changes)) AND t.tenant = c.tenant
    RETURNING t.queued, t.in_flight, c.acked
), woken AS (
    SELECT pg_notify({{work_channel}}, min(in_flight)::text) FROM settled
    WHERE acked > 0 AND queued > 0
    HAVING count(*) > 0
)
SELECT x.*, (SELECT sum(n) FROM alloc), (SELECT array_agg(id) FROM done),
    (SELECT count(*) FROM woken)
FROM (SELECT 1) one
LEFT JOIN taken x ON true
ORDER BY x.sort_key;

-- name: fail_run
UPDATE corral_runs SET
    status = CASE WHEN cancel_requested = 1 THEN 'cancelled'
                  WHEN :retryable = 1 AND attempts < max_attempts THEN 'queued'
                  ELSE 'failed' END,
    error = :error,
    available_at = :retry_at,
    sort_key = :retry_at - priority * :aging,
    finished_at = CASE WHEN cancel_requested = 0 AND :retryable = 1 AND attempts < max_attempts
                       THEN NULL ELSE :now END,
    lease_owner = NULL,
    lease_expires_at = NULL,
    journal_seq = journal_seq + 1
WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now
RETURNING tenant, status, parent_id, leased_at, journal_seq, attempts;

-- name: release_run
-- :unstarted = 1: the worker never called the run's agent (a handed run it had no slot for).
-- A run this very lease started (started_at = leased_at) is then unstarted again, so its
-- first start is still held to its start_within (overdue_runs, first_start_by).
UPDATE corral_runs SET
    status = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END,
    finished_at = CASE WHEN cancel_requested = 1 THEN :now END,
    attempts = attempts - 1, available_at = :now,
    started_at = CASE WHEN :unstarted = 1 AND started_at = leased_at THEN NULL
                      ELSE started_at END,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now
RETURNING tenant, status, parent_id, attempts;

-- name: leased_to
-- a stopping worker's leftovers (Store.leased_to): read once per worker stop, through the index
-- of running runs
SELECT id, lease_epoch FROM corral_runs WHERE status = 'running' AND lease_owner = :owner;

-- name: finish_cancelled
UPDATE corral_runs SET status = 'cancelled', finished_at = :now,
    error = NULL, lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now
RETURNING tenant, parent_id, leased_at;

-- name: cancel_idle
UPDATE corral_runs SET status = 'cancelled', finished_at = :now, cancel_requested = 1
WHERE id = :id AND status = :status
RETURNING tenant, parent_id;

-- name: overdue_runs
-- Without a lock: runs not yet delivered past the time their first attempt had to start by
-- (the index corral_runs_start_by holds only runs with such a time, queued, undelivered)
SELECT id, start_by FROM corral_runs
WHERE status = 'queued' AND attempts = 0 AND start_by IS NOT NULL AND start_by < :now
    AND started_at IS NULL
ORDER BY start_by
LIMIT :limit;

-- name: end_overdue_run
-- One of them ended failed (RunExpired), unless a worker leased it meanwhile
UPDATE corral_runs SET status = 'failed', error = :error, finished_at = :now
WHERE id = :id AND status = 'queued' AND attempts = 0 AND start_by < :now
    AND started_at IS NULL
RETURNING tenant, parent_id;

-- name: retry_run
-- A dead-lettered root run queued again (Store.retry). Its attempts go on counting; it gets
-- :more attempts past those used (NULL: as many as it was submitted with; at most what the
-- column holds). Its journal stays, so its next delivery replays what already succeeded.
-- Its start_by goes: the operator wants it run now, and a run that expired undelivered
-- (expire_overdue) would otherwise be expired again, unrun, by the next look or lease.
UPDATE corral_runs SET
    status = 'queued',
    max_attempts = CASE WHEN COALESCE(:more, max_attempts) > 2147483647 - attempts THEN 2147483647
                        ELSE attempts + COALESCE(:more, max_attempts) END,
    available_at = :now,
    sort_key = :now - priority * :aging,
    finished_at = NULL,
    start_by = NULL,
    journal_seq = journal_seq + 1
WHERE id = :id AND status = 'failed' AND parent_id IS NULL
RETURNING tenant, journal_seq, lease_epoch;

-- name: request_cancel
UPDATE corral_runs SET cancel_requested = 1
WHERE id = :id AND status = 'running'
RETURNING id;

-- name: children_of
-- The children of every run in :ids (a JSON array), ended or not: cancel and retention walk
-- a tree one level at a time with it.
SELECT id, status, finished_at, children FROM corral_runs
WHERE parent_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)));

-- name: bump_journal
UPDATE corral_runs SET journal_seq = journal_seq + :n
WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now
RETURNING journal_seq, cancel_requested;

-- name: append_entry
-- entry number :offset (0-based) of an append that bump_journal then counts; fenced the same way
INSERT INTO corral_journal (run_id, seq, kind, name, data, epoch, created_at)
SELECT id, journal_seq + 1 + :offset, :kind, :name, :data, lease_epoch, :now
FROM corral_runs
WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now;

-- name: read_journal
SELECT run_id, seq, kind, name, data, epoch, created_at FROM corral_journal
WHERE run_id = :id AND seq > :after
ORDER BY seq
LIMIT :limit;

-- name: tenant_stats
SELECT t.tenant, t.plan, t.queued, t.in_flight, t.cap, t.weight, t.succeeded, t.failed,
    t.cancelled,
    (SELECT MIN(r.available_at) FROM corral_runs r
     WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at <= :now) AS oldest,
    -- queued runs not yet due (not_before, a retry's backoff): O(such runs) on
    -- corral_runs_queued_age, read only for tenants with anything queued
    CASE WHEN t.queued > 0 THEN
        (SELECT COUNT(*) FROM corral_runs r
         WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at > :now)
    ELSE 0 END AS later
FROM corral_tenants t
ORDER BY t.tenant;

-- name: count_waiting
-- on the partial index of waiting runs: O(waiting), not O(table)
SELECT COUNT(*) FROM corral_runs WHERE status = 'waiting';

-- name: upsert_plan
INSERT INTO corral_plans (name, cap, weight, max_queued) VALUES (:name, :cap, :weight, :max_queued)
ON CONFLICT (name) DO UPDATE SET cap = excluded.cap, weight = excluded.weight,
    max_queued = excluded.max_queued;

-- name: insert_plan_if_missing
INSERT INTO corral_plans (name, cap, weight, max_queued) VALUES (:name, :cap, :weight, :max_queued)
ON CONFLICT (name) DO NOTHING;

-- name: list_plans
SELECT name, cap, weight, max_queued FROM corral_plans ORDER BY name;

-- name: set_tenant
INSERT INTO corral_tenants (tenant, plan, cap_override, weight_override, max_queued_override,
    cap, weight, max_queued)
VALUES (:tenant, :plan, :cap_override, :weight_override, :max_queued_override, 0, 1, 0)
ON CONFLICT (tenant) DO UPDATE SET plan = excluded.plan, cap_override = excluded.cap_override,
    weight_override = excluded.weight_override, max_queued_override = excluded.max_queued_override;

-- fragment: plan_cap
-- A tenant's cap as its plan and its own override make it (in a statement on corral_tenants).
COALESCE(cap_override, (SELECT p.cap FROM corral_plans p WHERE p.name = corral_tenants.plan))

-- name: lift_undue_tenants
-- Maintenance: a tenant whose queued runs are all due later (not_before, a retry's backoff)
-- is idle to the dispatcher, so it is lifted to the lowest vtime among the tenants below
-- their cap with a run due now (the highest vtime when there is none), in sorted order of
-- the tenant rows, as leases lock them. Otherwise the wait for its runs banked credit: it
-- took every slot once they came due, and its old vtime held down vtime_floor, the floor
-- that tenants starting to queue are lifted to, so they took every slot too.
-- (A due run is probed per tenant, in a scalar subquery: as EXISTS it became a join that read
-- every due run of every tenant.)
WITH due_floor AS (
    SELECT COALESCE(
        (SELECT b.vtime FROM corral_tenants b
         WHERE b.queued > 0 AND b.in_flight < b.cap
           AND (SELECT 1 FROM corral_runs r WHERE r.tenant = b.tenant AND r.status = 'queued'
                AND r.available_at <= :now ORDER BY r.available_at LIMIT 1) IS NOT NULL
         ORDER BY b.vtime LIMIT 1),
        (SELECT MAX(b.vtime) FROM corral_tenants b)) AS v
), undue AS (
    SELECT t.tenant FROM corral_tenants t, due_floor f
    WHERE t.queued > 0 AND t.vtime < f.v
      AND (SELECT 1 FROM corral_runs r WHERE r.tenant = t.tenant AND r.status = 'queued'
           AND r.available_at <= :now ORDER BY r.available_at LIMIT 1) IS NULL
    ORDER BY t.tenant
    FOR UPDATE OF t
)
UPDATE corral_tenants t SET vtime = f.v
FROM due_floor f
WHERE t.tenant = ANY(ARRAY(SELECT tenant FROM undue)) AND t.vtime < f.v;

-- name: refresh_tenant_limits
-- A tenant held at its cap whose cap is raised above its runs in flight is eligible again: it
-- is lifted as in adjust_tenant, so the time it spent at the cap banks no credit. (Every SET
-- expression reads the row as it was: cap and vtime here are the old values.)
UPDATE corral_tenants SET
    cap = {{plan_cap}},
    weight = COALESCE(weight_override, (SELECT p.weight FROM corral_plans p WHERE p.name = corral_tenants.plan)),
    max_queued = COALESCE(max_queued_override, (SELECT p.max_queued FROM corral_plans p WHERE p.name = corral_tenants.plan)),
    vtime = CASE WHEN in_flight >= cap AND queued > 0
                  AND in_flight < {{plan_cap}}
              THEN GREATEST(vtime, {{vtime_floor}}) ELSE vtime END
WHERE plan = :plan OR tenant = :tenant;

-- name: get_tenant
SELECT * FROM corral_tenants WHERE tenant = :tenant;

-- name: plan_exists
SELECT 1 FROM corral_plans WHERE name = :name;

-- name: set_global_cap
INSERT INTO corral_settings (key, value) VALUES ('global_cap', :value)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: notify_work
SELECT pg_notify({{work_channel}}, '');

-- name: handoff_channel
-- the channel of runs handed to :owner, for its LISTEN: the fragment itself, so the two agree
SELECT {{handoff_channel}} FROM (SELECT :owner::text AS lease_owner) x;

-- name: offer_slots
-- a waiting worker's free slots, for submits to hand runs to (submit_one); lock_key is the
-- advisory lock its listening session holds. offered_at is the database's clock (submit_one
-- compares it with the same clock, whatever the machines' clocks say).
INSERT INTO corral_idle_workers (owner, slots, ttl, lock_key, offered_at)
VALUES (:owner, :slots, :ttl, :lock_key, {{db_now}})
ON CONFLICT (owner) DO UPDATE SET slots = excluded.slots, ttl = excluded.ttl,
    lock_key = excluded.lock_key, offered_at = excluded.offered_at
RETURNING owner;

-- name: renew_offer
-- a still-waiting worker's word that its offer stands (submit_one hands nothing to an offer
-- older than the store's offer_lifetime). The slots are left as they are: runs may have been
-- handed against them whose notifications the worker has yet to read. No row back: the offer
-- is gone (dropped as dead while its listening session was away), and the worker offers again.
UPDATE corral_idle_workers SET offered_at = {{db_now}} WHERE owner = :owner
RETURNING slots;

-- name: withdraw_offer
-- the slots still offered: fewer than the worker offered means runs handed to it whose
-- notifications it has yet to read
DELETE FROM corral_idle_workers WHERE owner = :owner
RETURNING slots;

-- name: offer_taken
-- a lease took :n runs into slots its worker may have offered: the offer keeps only the rest
UPDATE corral_idle_workers SET slots = GREATEST(slots - :n, 0) WHERE owner = :owner AND slots > 0;

-- name: drop_dead_offers
-- offers whose worker no longer holds its lock: it died, or lost its listening session (it
-- offers again after reconnecting)
DELETE FROM corral_idle_workers WHERE pg_try_advisory_xact_lock_shared(lock_key);

-- name: append_one_relaxed
-- PostgreSQL only (see queries.DIALECT_ONLY): a whole fenced single-entry append as one
-- autocommit statement whose commit is asynchronous (synchronous_commit off, for this
-- transaction only). The hot path of ctx.step() and ctx.emit().
WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS setting),
bumped AS (
    UPDATE corral_runs SET journal_seq = journal_seq + 1
    WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now
      AND EXISTS (SELECT 1 FROM relaxed)
    RETURNING id, journal_seq, lease_epoch, cancel_requested
),
entry AS (
    INSERT INTO corral_journal (run_id, seq, kind, name, data, epoch, created_at)
    SELECT id, journal_seq, :kind, :name, :data, lease_epoch, :now FROM bumped
)
SELECT journal_seq, cancel_requested FROM bumped;
