-- Workers' reports of themselves (sql_workers.py). Every name here exists in the other
-- dialect's workers.sql too.

-- name: report_worker
INSERT INTO corral_workers (id, host, pid, started_at, seen_at, lease_ttl, concurrency,
                            express_slots, busy, stuck, completed, draining, agents)
VALUES (:worker_id, :host, :pid, :started_at, :seen_at, :lease_ttl, :concurrency,
        :express_slots, :busy, :stuck, :completed, :draining, :agents)
ON CONFLICT (id) DO UPDATE SET
    seen_at = excluded.seen_at, busy = excluded.busy, stuck = excluded.stuck,
    completed = excluded.completed, draining = excluded.draining;

-- name: forget_silent_workers
-- Rows of workers killed long ago (a worker that stops deletes its own). A handful of rows:
-- no index.
DELETE FROM corral_workers WHERE seen_at < :before;

-- name: remove_worker
DELETE FROM corral_workers WHERE id = :id;

-- name: list_workers
-- not the rows forget_silent_workers has yet to delete: with no worker left to report, a
-- killed worker's row stays, and is shown for an hour only all the same
SELECT id, host, pid, started_at, seen_at, lease_ttl, concurrency, express_slots, busy,
       stuck, completed, draining, agents
FROM corral_workers
WHERE seen_at >= :since
ORDER BY host, started_at, id;
