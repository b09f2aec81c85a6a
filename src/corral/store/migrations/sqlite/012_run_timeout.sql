-- A run's own limit on the seconds one attempt may take (app.submit(timeout=)); NULL: the
-- agent's timeout, or the worker's default.
ALTER TABLE corral_runs ADD COLUMN timeout REAL;
