-- Read-only queries of the HTTP service (store/sql_keys.py). Same names in sqlite/ and postgres/.

-- name: ping
SELECT 1;

-- name: child_runs
SELECT * FROM corral_runs WHERE parent_id = :id ORDER BY id LIMIT :limit;

-- name: queue_waits
-- seconds from becoming available to the first lease, for runs first leased in (since, until];
-- a run already requeued (available_at moved past started_at) counts from its creation
SELECT started_at,
    started_at - CASE WHEN available_at <= started_at THEN available_at ELSE created_at END
FROM corral_runs
WHERE started_at IS NOT NULL AND started_at > :since AND started_at <= :until
ORDER BY started_at
LIMIT :limit;

-- name: delivery_counters
-- kept per tenant by the lease (a delivery past a run's first attempt), release (which gives
-- an attempt back), the reaper (a lease that expired on the last attempt) and submit_one
-- (a run handed to a waiting worker)
SELECT COALESCE(SUM(redelivered), 0), COALESCE(SUM(expiry_dead_letters), 0),
    COALESCE(SUM(handed), 0)
FROM corral_tenants;

-- name: expired_unreclaimed
SELECT COUNT(*) FROM corral_runs WHERE status = 'running' AND lease_expires_at <= :now;

-- name: run_progress
-- status and journal length of many runs (:ids, a JSON array), one primary-key probe each
SELECT id, status, journal_seq FROM corral_runs WHERE id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)));
