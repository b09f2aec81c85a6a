-- Listings (`corral runs list`, GET /v1/runs, the dashboard) are newest first by id, and a
-- key sees only its tenant's runs. The listing index was (tenant, created_at), which that
-- order cannot use: a small tenant's page behind another tenant's burst read the whole burst
-- (100 ms at 200,000 runs, growing with the table). By (tenant, id) a page is a walk down
-- the tenant's entries from the cursor. Same size, same writes: ids are time-ordered.
DROP INDEX corral_runs_listing;
CREATE INDEX corral_runs_listing ON corral_runs (tenant, id);

-- PostgreSQL's 008 also adds corral_runs_queued_age (tenant, available_at), for the oldest
-- runnable run per tenant in stats. SQLite does not: its lease deletes index entries in place,
-- and a third one on the lease's path cost the lease+ack cycle ~25%. Stats here read a
-- backlogged tenant's queued entries instead (~50-100 ms per 200,000).
