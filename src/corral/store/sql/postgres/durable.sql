-- Named queries for durable execution (spawn, wait, sleep, charge). Same names in both dialects.

-- name: lock_running
SELECT tenant, root_id, depth, children, cancel_requested, priority, budget, spent
FROM corral_runs
WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now
FOR UPDATE;

-- name: tenant_fanout
SELECT max_children, max_depth FROM corral_tenants WHERE tenant = :tenant;

-- name: set_tenant_fanout
UPDATE corral_tenants SET max_children = :max_children, max_depth = :max_depth
WHERE tenant = :tenant;

-- name: add_children
UPDATE corral_runs SET children = children + :n WHERE id = :id;

-- name: budget_chain
WITH RECURSIVE chain (id, parent_id, depth) AS (
    SELECT id, parent_id, depth FROM corral_runs WHERE id = :id
    UNION ALL
    SELECT r.id, r.parent_id, r.depth FROM corral_runs r JOIN chain c ON r.id = c.parent_id
)
SELECT id FROM chain ORDER BY depth;

-- name: remaining_budget
SELECT budget - spent FROM corral_runs WHERE id = :id AND budget IS NOT NULL;

-- name: charge_run
UPDATE corral_runs SET spent = spent + :amount
WHERE id = :id AND (budget IS NULL OR spent + :amount <= budget + 1e-9)
RETURNING budget, spent;

-- name: suspend_run
-- a suspension is not a failed attempt: give the attempt back, as a release does
UPDATE corral_runs SET status = 'waiting', awaiting = :awaiting, wake_at = :wake_at,
    attempts = attempts - 1,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id AND lease_epoch = :epoch AND status = 'running' AND lease_expires_at > :now
RETURNING tenant, attempts;

-- name: run_outcome
SELECT id, status, result, error, parent_id FROM corral_runs WHERE id = :id;

-- name: insert_wait
INSERT INTO corral_waits (parent_id, child_id) VALUES (:parent_id, :child_id);

-- name: lock_run
SELECT id FROM corral_runs WHERE id = :id FOR UPDATE;

-- name: take_waits
DELETE FROM corral_waits WHERE child_id = :child_id RETURNING parent_id;

-- name: drop_waits
DELETE FROM corral_waits WHERE parent_id = :parent_id;

-- name: count_down_awaiting
UPDATE corral_runs SET awaiting = awaiting - 1
WHERE id = :id AND status = 'waiting' AND awaiting > 0
RETURNING awaiting;

-- name: wake_run
UPDATE corral_runs SET status = 'queued', available_at = :now, awaiting = 0, wake_at = NULL
WHERE id = :id AND status = 'waiting'
RETURNING tenant;

-- name: due_timers
SELECT id FROM corral_runs
WHERE status = 'waiting' AND wake_at <= :now AND awaiting = 0
ORDER BY wake_at
LIMIT :limit
FOR UPDATE SKIP LOCKED;
