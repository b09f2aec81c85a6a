-- Fair dispatch by virtual time (docs/fairness.md). A tenant's vtime is the slot-seconds it
-- has been charged, divided by its weight: each lease charges run_cost / weight, run_cost
-- being a moving average of how long the tenant's runs hold their lease. The lease serves
-- the lowest vtime first, so weights hold when slots are scarce and a tenant with long runs
-- does not crowd out one with short runs. A tenant that starts queueing again is lifted to the
-- lowest vtime of the eligible tenants (below their cap, runs queued) or, when there are
-- none, to the highest vtime, so idle time earns no credit to burst with.
ALTER TABLE corral_tenants ADD COLUMN vtime DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE corral_tenants ADD COLUMN run_cost DOUBLE PRECISION NOT NULL DEFAULT 1;
ALTER TABLE corral_runs ADD COLUMN leased_at DOUBLE PRECISION;
CREATE INDEX corral_tenants_vtime ON corral_tenants (vtime) WHERE queued > 0;
CREATE INDEX corral_tenants_vtime_all ON corral_tenants (vtime);
-- candidates are ordered by vtime now; last_served_at only breaks ties, so its index goes
DROP INDEX IF EXISTS corral_tenants_backlog;
