-- Named queries for the SQLite store. Every name here exists in sql/postgres/queries.sql too
-- (tests/unit/test_sql_files.py checks it). Parameters are :name.

-- fragment: vtime_floor
-- What a tenant that becomes eligible again (runs queued after none, below its cap again) is
-- lifted to, at least: the lowest vtime among the eligible tenants, or the highest vtime when
-- none is eligible. So idle or capped time banks no credit (docs/fairness.md).
COALESCE((SELECT MIN(b.vtime) FROM corral_tenants b WHERE b.queued > 0 AND b.in_flight < b.cap),
         (SELECT MAX(b.vtime) FROM corral_tenants b))

-- fragment: first_start_by
-- A lease's start_by, in the RETURNING of the update that takes it: the run's deadline for
-- its first start, given only with the lease that starts it (started_at was set by this very
-- update). A run that suspended, was released or failed an attempt has started already,
-- though its attempt count may be back at 0.
CASE WHEN started_at = leased_at THEN start_by END AS start_by

-- name: insert_run
INSERT INTO corral_runs (id, tenant, agent, input, status, priority, sort_key, available_at,
    max_attempts, idempotency_key, parent_id, root_id, depth, budget, timeout, start_by,
    created_at, journal_seq)
VALUES (:id, :tenant, :agent, :input, 'queued', :priority, :sort_key, :available_at,
    :max_attempts, :idempotency_key, :parent_id, :root_id, :depth, :budget, :timeout, :start_by,
    :now, 1)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

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
SELECT name, last_tick FROM corral_schedules WHERE name IN (SELECT value FROM json_each(:names));

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
UPDATE corral_tenants SET queued = queued + :n,
    vtime = CASE WHEN queued = 0 THEN MAX(vtime, {{vtime_floor}}) ELSE vtime END
WHERE tenant = :tenant AND queued + :n <= max_queued
RETURNING queued, in_flight < cap AND weight > 0;

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
              THEN MAX(vtime, {{vtime_floor}}) ELSE vtime END,
    run_cost = CASE WHEN :cost < 0 THEN run_cost ELSE 0.8 * run_cost + 0.2 * :cost END
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
              THEN MAX(vtime, {{vtime_floor}}) ELSE vtime END + :charge
WHERE tenant = :tenant;

-- name: lock_tenant
SELECT tenant, in_flight, cap, weight, queued, vtime, run_cost FROM corral_tenants
WHERE tenant = :tenant;

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
LIMIT :limit;

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
SELECT value FROM corral_settings WHERE key = 'global_cap';

-- name: read_global_cap
-- the global cap as statistics read it (no lock: they change nothing)
SELECT value FROM corral_settings WHERE key = 'global_cap';

-- name: total_in_flight
SELECT COALESCE(SUM(in_flight), 0) FROM corral_tenants;

-- name: candidate_tenants
SELECT t.tenant, t.in_flight, t.cap, t.weight, t.queued, t.vtime, t.run_cost
FROM corral_tenants t
WHERE t.queued > 0 AND t.in_flight < t.cap AND t.in_flight < :light_below
  AND EXISTS (SELECT 1 FROM corral_runs r INDEXED BY corral_runs_ready
              WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at <= :now)
ORDER BY t.vtime, t.in_flight / t.weight, t.last_served_at, t.tenant
LIMIT :limit;

-- name: take_tenants_runs
-- the next runnable runs (priority with aging, then age) of several tenants, each its own
-- number, leased in one statement. {picks} stands for one tenant_runs_pick per tenant joined
-- by UNION ALL ({i} numbering their parameters): SQLite cannot take a per-row LIMIT from a
-- correlated subquery, and one statement per tenant cost a round of statement overhead each.
UPDATE corral_runs SET
    status = 'running',
    attempts = attempts + 1,
    lease_epoch = lease_epoch + 1,
    lease_owner = :owner,
    lease_expires_at = :expires_at,
    started_at = COALESCE(started_at, :now),
    leased_at = :now
WHERE id IN ({picks})
RETURNING id, lease_epoch, tenant, agent, input, attempts, max_attempts, lease_expires_at,
    root_id, parent_id, depth, journal_seq, timeout, {{first_start_by}}, sort_key;

-- name: tenant_runs_pick
SELECT id FROM (
    SELECT id FROM corral_runs
    WHERE tenant = :tenant_{i} AND status = 'queued' AND available_at <= :now
    ORDER BY sort_key
    LIMIT :n_{i}
)

-- name: oldest_heads
-- fairness off (for comparison), first step: the :n tenants whose first runnable runs are
-- oldest, below their caps and not in :full (a JSON array: tenants this lease has just filled
-- to their cap). The :n oldest runs of all are among their first :n runs (merge_oldest_picks).
-- Runs with equal sort keys go in the order they were stored (rowid), as within a tenant.
SELECT tenant FROM (
    SELECT t.tenant, h.sort_key, h.rowid AS seq
    FROM corral_tenants t
    JOIN corral_runs h ON h.rowid = (
        SELECT r.rowid FROM corral_runs r INDEXED BY corral_runs_ready
        WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at <= :now
        ORDER BY r.sort_key, r.rowid
        LIMIT 1)
    WHERE t.queued > 0 AND t.in_flight < t.cap
      AND t.tenant NOT IN (SELECT value FROM json_each(:full))
)
ORDER BY sort_key, seq
LIMIT :n;

-- name: merge_oldest_picks
-- fairness off, second step: a merge of the queues of the tenants oldest_heads found, oldest
-- first. {picks} stands for one tenant_oldest_pick per tenant joined by UNION ALL (as in
-- take_tenants_runs). No index of every queued run is kept up to date for this mode alone.
SELECT id, tenant FROM ({picks}) ORDER BY sort_key, seq LIMIT :n;

-- name: tenant_oldest_pick
SELECT * FROM (
    SELECT id, tenant, sort_key, rowid AS seq FROM corral_runs
    WHERE tenant = :tenant_{i} AND status = 'queued' AND available_at <= :now
    ORDER BY sort_key, rowid
    LIMIT :n
)

-- name: tenant_headroom
SELECT tenant, cap - in_flight FROM corral_tenants WHERE tenant = :tenant;

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
WHERE parent_id IN (SELECT value FROM json_each(:ids));

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
    (SELECT MIN(r.available_at) FROM corral_runs r INDEXED BY corral_runs_ready
     WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at <= :now) AS oldest,
    -- queued runs not yet due (not_before, a retry's backoff)
    CASE WHEN t.queued > 0 THEN
        (SELECT COUNT(*) FROM corral_runs r INDEXED BY corral_runs_ready
         WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at > :now)
    ELSE 0 END AS later
FROM corral_tenants t
ORDER BY t.tenant;

-- name: count_waiting
-- on the partial index of waiting runs: O(waiting), not O(table)
SELECT COUNT(*) FROM corral_runs INDEXED BY corral_runs_timers WHERE status = 'waiting';

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
-- their cap with a run due now (the highest vtime when there is none). Otherwise the wait
-- for its runs banked credit: it took every slot once they came due, and its old vtime held
-- down vtime_floor, the floor that tenants starting to queue are lifted to, so they took
-- every slot too.
WITH due_floor AS MATERIALIZED (
    SELECT COALESCE(
        (SELECT b.vtime FROM corral_tenants b
         WHERE b.queued > 0 AND b.in_flight < b.cap
           AND EXISTS (SELECT 1 FROM corral_runs r WHERE r.tenant = b.tenant
                       AND r.status = 'queued' AND r.available_at <= :now)
         ORDER BY b.vtime LIMIT 1),
        (SELECT MAX(b.vtime) FROM corral_tenants b)) AS v
)
UPDATE corral_tenants SET vtime = (SELECT v FROM due_floor)
WHERE queued > 0 AND vtime < (SELECT v FROM due_floor)
  AND NOT EXISTS (SELECT 1 FROM corral_runs r WHERE r.tenant = corral_tenants.tenant
                  AND r.status = 'queued' AND r.available_at <= :now);

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
              THEN MAX(vtime, {{vtime_floor}}) ELSE vtime END
WHERE plan = :plan OR tenant = :tenant;

-- name: get_tenant
SELECT * FROM corral_tenants WHERE tenant = :tenant;

-- name: plan_exists
SELECT 1 FROM corral_plans WHERE name = :name;

-- name: set_global_cap
INSERT INTO corral_settings (key, value) VALUES ('global_cap', :value)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: notify_work
SELECT 1;

-- name: light_work
-- does any tenant with fewer than :light_below runs in flight (and below its cap) hold a
-- runnable queued run? Asked, reading only, by a waiting worker that another process's commit
-- woke (wait_for_work): with only express slots free, for light tenants; otherwise with
-- :light_below unlimited, for any work a lease could take.
SELECT 1 FROM corral_tenants t
WHERE t.queued > 0 AND t.in_flight < t.cap AND t.in_flight < :light_below
  AND EXISTS (SELECT 1 FROM corral_runs r INDEXED BY corral_runs_ready
              WHERE r.tenant = t.tenant AND r.status = 'queued' AND r.available_at <= :now)
LIMIT 1;
