-- A run's own limit on the seconds one attempt may take (app.submit(timeout=)); NULL: the
-- agent's timeout, or the worker's default. Nullable without a default: no table rewrite.
ALTER TABLE corral_runs ADD COLUMN timeout DOUBLE PRECISION;
