-- The latest time a run's first attempt may start (app.submit(start_within=): its due time
-- plus that many seconds); a worker that leases it later ends it as RunExpired instead of
-- running it. NULL: no limit.
ALTER TABLE corral_runs ADD COLUMN start_by REAL;
