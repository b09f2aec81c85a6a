-- The runs that must start by a time (start_within) and have not been delivered yet: workers
-- end those past it (Store.expire_overdue) instead of leaving them queued, counted in the
-- tenant's depth and quota, until a slot frees. Only such runs have entries.
CREATE INDEX corral_runs_start_by ON corral_runs (start_by)
    WHERE status = 'queued' AND attempts = 0 AND start_by IS NOT NULL;
