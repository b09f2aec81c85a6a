-- The agents each worker serves, as a JSON array of names (Store.report_worker): what
-- `corral workers` shows and what a bare `corral submit` checks its agent against. Rows of
-- workers reporting before this column existed read as serving none.
ALTER TABLE corral_workers ADD COLUMN agents TEXT NOT NULL DEFAULT '[]';
