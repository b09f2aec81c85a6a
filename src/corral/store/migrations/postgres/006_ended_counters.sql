-- Runs that ended, counted per tenant and status where the tenant's other counters are kept,
-- by the same statements that end runs: queue statistics and /metrics read these (O(tenants))
-- instead of counting every stored run by status (O(table) per scrape). They count every run
-- that ever ended, so a purge of old runs leaves them as they are. Existing runs are counted
-- once here.
ALTER TABLE corral_tenants ADD COLUMN succeeded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE corral_tenants ADD COLUMN failed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE corral_tenants ADD COLUMN cancelled BIGINT NOT NULL DEFAULT 0;
UPDATE corral_tenants SET
    succeeded = (SELECT COUNT(*) FROM corral_runs r
                 WHERE r.tenant = corral_tenants.tenant AND r.status = 'succeeded'),
    failed = (SELECT COUNT(*) FROM corral_runs r
              WHERE r.tenant = corral_tenants.tenant AND r.status = 'failed'),
    cancelled = (SELECT COUNT(*) FROM corral_runs r
                 WHERE r.tenant = corral_tenants.tenant AND r.status = 'cancelled');
