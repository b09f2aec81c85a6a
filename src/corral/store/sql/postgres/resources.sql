-- Named queries for shared contention resources. Same names in both dialects.
--
-- A request or a release is one round trip: every statement of its transaction, from the
-- lock of the resource row to the COMMIT, goes out at once (pipeline mode), none waits for a
-- result, so the lock is held only while the server executes them. The grant step is
-- therefore in SQL (`grant_next`).

-- name: define_resource
INSERT INTO corral_resources (name, capacity, rpm, tpm, alpha)
VALUES (:name, :capacity, :rpm, :tpm, :alpha)
ON CONFLICT (name) DO UPDATE SET capacity = excluded.capacity, rpm = excluded.rpm,
    tpm = excluded.tpm, alpha = excluded.alpha;

-- name: lock_resource
SELECT capacity, rpm, tpm, alpha, tick, seq, paused_until FROM corral_resources
WHERE name = :name
FOR UPDATE;

-- name: expire_holders
-- an expired holder is a release: the tick advances once for each (before they are dropped)
UPDATE corral_resources SET tick = tick + (
    SELECT COUNT(*) FROM corral_resource_requests
    WHERE resource = :name AND state = 'holding' AND expires_at <= :now)
WHERE name = :name;

-- name: drop_expired
DELETE FROM corral_resource_requests WHERE resource = :name AND expires_at <= :now;

-- name: insert_request
-- Joins the queue unless it is full (in total, or for this agent): then nothing is inserted.
-- seq (arrival order, for ties and within an agent) is one more than any request's: under
-- the lock, so it orders every request that exists. Expired rows count for nothing.
INSERT INTO corral_resource_requests (resource, request_id, agent_id, weight, tokens,
    arrival_tick, seq, state, expires_at)
SELECT :name, :request_id, :agent_id, :weight, :tokens, r.tick,
    (SELECT COALESCE(MAX(seq), 0) + 1 FROM corral_resource_requests WHERE resource = :name),
    'waiting', :expires_at
FROM corral_resources r
WHERE r.name = :name
  AND (SELECT COUNT(*) FROM corral_resource_requests
       WHERE resource = :name AND state = 'waiting' AND expires_at > :now) < :max_waiters
  AND (CAST(:max_waiters_per_agent AS INTEGER) IS NULL
       OR (SELECT COUNT(*) FROM corral_resource_requests
           WHERE resource = :name AND agent_id = :agent_id AND state = 'waiting'
             AND expires_at > :now)
          < CAST(:max_waiters_per_agent AS INTEGER));

-- name: release_tick
-- a holder's release advances the tick (a waiter leaving the queue does not)
UPDATE corral_resources SET tick = tick + (
    SELECT COUNT(*) FROM corral_resource_requests
    WHERE resource = :name AND request_id = :request_id AND state = 'holding')
WHERE name = :name;

-- name: settle_usage
-- a holder's actual usage replaces the tokens reserved at its grant
UPDATE corral_resource_usage SET tokens = :tokens
WHERE resource = :name AND request_id = :request_id
  AND EXISTS (SELECT 1 FROM corral_resource_requests
              WHERE resource = :name AND request_id = :request_id AND state = 'holding');

-- name: remove_request
DELETE FROM corral_resource_requests WHERE resource = :name AND request_id = :request_id;

-- name: grant_next
-- The grant step, one grant: if a slot is free, nothing is paused and the windows allow,
-- the oldest request of the waiting agent with the highest load score L(i) becomes a
-- holder. The order is `corral.contention.score.choose`'s: L(i) scaled by maxQ * maxD is
-- u * Q_i - v * a_i with the u, v below (exact for integer weights and dyadic alphas);
-- ties go to the earliest oldest request (seq). tests/contract/test_shared_grant_order.py
-- checks it against `choose`. The winner waits (nobody overtakes it) while its expected
-- tokens do not fit in the token window. Expired rows (dropped by the next poll) count for
-- nothing: neither as holders nor as waiters.
UPDATE corral_resource_requests
SET state = 'holding', granted_at = :now, expires_at = :expires_at
WHERE resource = :name AND state = 'waiting' AND request_id = (
    WITH r AS (
        SELECT capacity, rpm, tpm, alpha, tick, paused_until FROM corral_resources
        WHERE name = :name),
    w AS (
        SELECT agent_id, SUM(weight) AS load, MIN(arrival_tick) AS arrival, MIN(seq) AS seq
        FROM corral_resource_requests
        WHERE resource = :name AND state = 'waiting' AND expires_at > :now
        GROUP BY agent_id),
    n AS (SELECT MAX(load) AS max_q, MIN(arrival) AS oldest FROM w),
    k AS (
        SELECT
            CASE WHEN r.alpha = 0 THEN 0.0
                 WHEN r.alpha = 1 OR r.tick = n.oldest THEN 1.0
                 ELSE r.alpha * (r.tick - n.oldest) END AS u,
            CASE WHEN r.alpha = 0 THEN 1.0
                 WHEN r.alpha = 1 OR r.tick = n.oldest THEN 0.0
                 ELSE (1.0 - r.alpha) * n.max_q END AS v
        FROM r, n),
    best AS (SELECT w.seq FROM w, k ORDER BY k.u * w.load - k.v * w.arrival DESC, w.seq LIMIT 1),
    used AS (
        SELECT COUNT(*) AS requests, COALESCE(SUM(tokens), 0) AS tokens
        FROM corral_resource_usage WHERE resource = :name AND at > :since)
    SELECT q.request_id FROM corral_resource_requests q, best, r, used
    WHERE q.resource = :name AND q.seq = best.seq AND q.state = 'waiting'
      AND r.paused_until <= :now
      AND (SELECT COUNT(*) FROM corral_resource_requests
           WHERE resource = :name AND state = 'holding' AND expires_at > :now) < r.capacity
      AND (r.rpm IS NULL OR used.requests < r.rpm)
      AND (r.tpm IS NULL OR used.tokens + q.tokens <= r.tpm));

-- name: record_grants
-- reserve the expected tokens of the requests granted at :now in the usage window
INSERT INTO corral_resource_usage (resource, request_id, at, tokens)
SELECT q.resource, q.request_id, :now, q.tokens FROM corral_resource_requests q
WHERE q.resource = :name AND q.state = 'holding' AND q.granted_at = :now
  AND NOT EXISTS (SELECT 1 FROM corral_resource_usage u
                  WHERE u.resource = :name AND u.request_id = q.request_id);

-- name: forget_usage
DELETE FROM corral_resource_usage WHERE resource = :name AND at <= :before;

-- name: request_state
SELECT state FROM corral_resource_requests WHERE resource = :name AND request_id = :request_id;

-- name: probe_requests
-- Without a lock: the states and expiries of this process's requests (:ids, a JSON array),
-- and what says whether the grant step could grant anything now (expired rows, or a free
-- slot with waiters and no pause).
SELECT q.request_id, q.state, q.expires_at, r.paused_until, r.capacity,
    (SELECT COUNT(*) FROM corral_resource_requests WHERE resource = :name AND state = 'holding'),
    (SELECT COUNT(*) FROM corral_resource_requests WHERE resource = :name AND state = 'waiting'),
    (SELECT COUNT(*) FROM corral_resource_requests WHERE resource = :name AND expires_at <= :now)
FROM corral_resources r
LEFT JOIN corral_resource_requests q
    ON q.resource = r.name AND q.request_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))
WHERE r.name = :name;

-- name: reclaim_request
-- A holder whose row expired while its process still used the slot (its renewals held up
-- past the TTL) takes the row back, as holding, capacity or not: the slot is in use, and the
-- grant step then grants nothing more until enough holders release. Nothing if the row
-- exists. Its tokens were reserved at its grant: no usage row here.
INSERT INTO corral_resource_requests (resource, request_id, agent_id, weight, tokens,
    arrival_tick, seq, state, expires_at, granted_at)
SELECT :name, :request_id, :agent_id, :weight, :tokens, r.tick,
    (SELECT COALESCE(MAX(seq), 0) + 1 FROM corral_resource_requests WHERE resource = :name),
    'holding', :expires_at, :now
FROM corral_resources r
WHERE r.name = :name
  AND NOT EXISTS (SELECT 1 FROM corral_resource_requests
                  WHERE resource = :name AND request_id = :request_id);

-- name: renew_request
UPDATE corral_resource_requests SET expires_at = :expires_at
WHERE resource = :name AND request_id = :request_id
RETURNING state;

-- name: pause_resource
UPDATE corral_resources SET paused_until = CASE WHEN paused_until > :until THEN paused_until ELSE :until END
WHERE name = :name;

-- name: usage_window
SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM corral_resource_usage
WHERE resource = :name AND at > :since;

-- name: resource_requests
SELECT agent_id, state, COUNT(*) FROM corral_resource_requests WHERE resource = :name
GROUP BY agent_id, state;

-- name: grants_made
-- The requests granted at :now. PostgreSQL: each is also announced to every process
-- (NOTIFY, payload: resource name, request id), this one included, at COMMIT.
SELECT request_id, pg_notify({{grants_channel}}, :name || ',' || request_id)
FROM corral_resource_requests
WHERE resource = :name AND state = 'holding' AND granted_at = :now;
