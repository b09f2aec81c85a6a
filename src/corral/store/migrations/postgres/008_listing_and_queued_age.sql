-- Listings (`corral runs list`, GET /v1/runs, the dashboard) are newest first by id, and a
-- key sees only its tenant's runs. The listing index was (tenant, created_at), which that
-- order cannot use: a small tenant's page behind another tenant's burst read the whole burst
-- (100 ms at 200,000 runs, growing with the table). By (tenant, id) a page is a walk down
-- the tenant's entries from the cursor. Same size, same writes: ids are time-ordered.
DROP INDEX corral_runs_listing;
CREATE INDEX corral_runs_listing ON corral_runs (tenant, id);

-- The oldest runnable run of a tenant (stats, `corral status`, /metrics, /v1/queues) is the
-- least available_at among its queued runs. The ready index orders them by sort_key, which
-- mixes in priority, so that minimum read every queued run of the tenant: a scrape during a
-- burst of 1,000,000 runs read all of them. On this index it is one entry a tenant.
-- Partial like the ready index, so it costs a write at submit and requeue only: a lease's or
-- an ack's new row version is not queued and gets no entry. (SQLite has no such index: there
-- the lease deletes index entries in place, and a third one cost its lease+ack cycle ~25%.)
CREATE INDEX corral_runs_queued_age ON corral_runs (tenant, available_at) WHERE status = 'queued';
