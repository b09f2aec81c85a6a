-- Only the lease with fairness off (pick_oldest_runs, a mode kept for comparison) read
-- corral_runs_ready_global, while every lease and submit kept it up to date: on SQLite a fair
-- lease of several tenants' runs changed it at as many places, one page each. That lease
-- now merges the tenants' own queues (corral_runs_ready) instead.
DROP INDEX IF EXISTS corral_runs_ready_global;
