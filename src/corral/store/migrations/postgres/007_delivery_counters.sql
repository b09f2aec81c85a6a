-- The delivery counters of /metrics, kept per tenant like the counts of ended runs (006), so
-- a scrape does not sum over every stored run: deliveries past a run's first attempt (a lease
-- that starts attempt 2 or later; a release, which gives the attempt back, takes it off) and
-- runs dead-lettered because their lease expired on the last attempt. Existing runs are
-- counted once here.
ALTER TABLE corral_tenants ADD COLUMN redelivered BIGINT NOT NULL DEFAULT 0;
ALTER TABLE corral_tenants ADD COLUMN expiry_dead_letters BIGINT NOT NULL DEFAULT 0;
UPDATE corral_tenants SET
    redelivered = (SELECT COALESCE(SUM(r.attempts - 1), 0) FROM corral_runs r
                   WHERE r.tenant = corral_tenants.tenant AND r.attempts > 1),
    expiry_dead_letters = (SELECT COUNT(*) FROM corral_runs r
                           WHERE r.tenant = corral_tenants.tenant AND r.status = 'failed'
                             AND strpos(error, '"type":"LeaseExpired"') > 0);
