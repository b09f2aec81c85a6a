-- Named queries for shared contention resources. Same names in both dialects.

-- name: define_resource
INSERT INTO corral_resources (name, capacity, rpm, tpm, alpha)
VALUES (:name, :capacity, :rpm, :tpm, :alpha)
ON CONFLICT (name) DO UPDATE SET capacity = excluded.capacity, rpm = excluded.rpm,
    tpm = excluded.tpm, alpha = excluded.alpha;

-- name: lock_resource
SELECT capacity, rpm, tpm, alpha, tick, seq, paused_until FROM corral_resources
WHERE name = :name;

-- name: expired_requests
DELETE FROM corral_resource_requests
WHERE resource = :name AND expires_at <= :now
RETURNING state;

-- name: advance_tick
UPDATE corral_resources SET tick = tick + :n WHERE name = :name;

-- name: count_requests
SELECT state, COUNT(*) FROM corral_resource_requests WHERE resource = :name GROUP BY state;

-- name: count_agent_waiting
SELECT COUNT(*) FROM corral_resource_requests
WHERE resource = :name AND agent_id = :agent_id AND state = 'waiting';

-- name: insert_request
INSERT INTO corral_resource_requests (resource, request_id, agent_id, weight, tokens,
    arrival_tick, seq, state, expires_at)
VALUES (:name, :request_id, :agent_id, :weight, :tokens, :tick, :seq, 'waiting', :expires_at);

-- name: bump_seq
UPDATE corral_resources SET seq = seq + 1 WHERE name = :name RETURNING seq;

-- name: waiting_agents
SELECT agent_id, SUM(weight), MIN(arrival_tick), MIN(seq) FROM corral_resource_requests
WHERE resource = :name AND state = 'waiting'
GROUP BY agent_id;

-- name: oldest_request_of
SELECT request_id, tokens FROM corral_resource_requests
WHERE resource = :name AND agent_id = :agent_id AND state = 'waiting'
ORDER BY seq
LIMIT 1;

-- name: usage_window
SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM corral_resource_usage
WHERE resource = :name AND at > :since;

-- name: grant_request
UPDATE corral_resource_requests SET state = 'holding', granted_at = :now, expires_at = :expires_at
WHERE resource = :name AND request_id = :request_id AND state = 'waiting';

-- name: record_usage
INSERT INTO corral_resource_usage (resource, request_id, at, tokens)
VALUES (:name, :request_id, :now, :tokens);

-- name: settle_usage
UPDATE corral_resource_usage SET tokens = :tokens WHERE resource = :name AND request_id = :request_id;

-- name: forget_usage
DELETE FROM corral_resource_usage WHERE resource = :name AND at <= :before;

-- name: remove_request
DELETE FROM corral_resource_requests WHERE resource = :name AND request_id = :request_id
RETURNING state;

-- name: request_states
SELECT request_id, state FROM corral_resource_requests
WHERE resource = :name AND request_id = :request_id;

-- name: renew_request
UPDATE corral_resource_requests SET expires_at = :expires_at
WHERE resource = :name AND request_id = :request_id
RETURNING state;

-- name: pause_resource
UPDATE corral_resources SET paused_until = CASE WHEN paused_until > :until THEN paused_until ELSE :until END
WHERE name = :name;

-- name: resource_requests
SELECT agent_id, state, COUNT(*) FROM corral_resource_requests WHERE resource = :name
GROUP BY agent_id, state;

-- name: notify_grants
-- PostgreSQL tells every process which requests were granted (payload: name then ids);
-- SQLite has no notifications: the same statement only echoes the payload
SELECT :payload;
