-- Retention: deleting finished runs. Every name here exists in sql/postgres/retention.sql too.
-- :ids is a JSON array of strings (as in resources.sql), on both dialects.

-- name: finished_roots
-- top-level runs that ended before :before, after the cursor :after (the purge pages past
-- roots whose trees have not ended). No index on finished_at: a purge is an occasional
-- maintenance read, and an index would cost every ack a write. The cursor is the rowid: in
-- its order the scan reads the table front to back (in id order it took twice as long).
SELECT id, children, rowid FROM corral_runs
WHERE parent_id IS NULL AND status IN ('succeeded', 'failed', 'cancelled')
  AND finished_at < :before AND rowid > CAST(:after AS INTEGER)
ORDER BY rowid
LIMIT :limit;

-- name: still_ended_roots
-- Of the roots in :roots (found without a lock), those still ended before :before: a root
-- that an operator retried meanwhile keeps its whole tree, journal and children.
-- (In the write transaction, which holds SQLite's one write lock.)
SELECT id FROM corral_runs
WHERE id IN (SELECT value FROM json_each(:roots))
  AND status IN ('succeeded', 'failed', 'cancelled') AND finished_at < :before;

-- name: delete_journal_of
DELETE FROM corral_journal WHERE run_id IN (SELECT value FROM json_each(:ids));

-- name: delete_waits_of
DELETE FROM corral_waits
WHERE parent_id IN (SELECT value FROM json_each(:ids)) OR child_id IN (SELECT value FROM json_each(:ids));

-- name: delete_runs
-- only runs still ended: a run is never deleted from under a writer
DELETE FROM corral_runs
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING id;
