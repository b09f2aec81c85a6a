-- Retention: deleting finished runs. Every name here exists in sql/sqlite/retention.sql too.
-- :ids is a JSON array of strings (as in resources.sql), on both dialects.

-- name: finished_roots
-- top-level runs that ended before :before, after the cursor :after (the id: the purge pages
-- past roots whose trees have not ended). No index on finished_at: a purge is an occasional
-- maintenance read, and an index would cost every ack a write.
SELECT id, children, id FROM corral_runs
WHERE parent_id IS NULL AND status IN ('succeeded', 'failed', 'cancelled')
  AND finished_at < :before AND id > :after
ORDER BY id
LIMIT :limit;

-- name: still_ended_roots
-- Of the roots in :roots (found without a lock), those still ended before :before: a root
-- that an operator retried meanwhile keeps its whole tree, journal and children.
-- Locked until the purge commits: an operator's retry of a root waits for it, then finds
-- no run.
SELECT id FROM corral_runs
WHERE id IN (SELECT jsonb_array_elements_text(CAST(:roots AS jsonb)))
  AND status IN ('succeeded', 'failed', 'cancelled') AND finished_at < :before
FOR UPDATE;

-- name: delete_journal_of
DELETE FROM corral_journal WHERE run_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)));

-- name: delete_waits_of
DELETE FROM corral_waits
WHERE parent_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))
   OR child_id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)));

-- name: delete_runs
-- only runs still ended: a run is never deleted from under a writer
DELETE FROM corral_runs
WHERE id IN (SELECT jsonb_array_elements_text(CAST(:ids AS jsonb)))
  AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING id;
