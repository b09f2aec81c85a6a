-- A lease ranks candidate tenants by (vtime, in_flight / weight, last_served_at, tenant) and
-- takes the first few. The index was on vtime alone, so tenants tied on vtime (every tenant
-- that starts queueing is lifted to the same floor: a burst of new tenants all ties) were read
-- and sorted whole, each probed for a ready run, on every lease: 0.3 ms at 200 tied
-- backlogged tenants, 18 ms at 10,000. On an index in that order the lease reads its first
-- few entries. It replaces the vtime index: vtime still leads, for the floor's minimum.
DROP INDEX corral_tenants_vtime;
CREATE INDEX corral_tenants_lease_order
    ON corral_tenants (vtime, in_flight / weight, last_served_at, tenant) WHERE queued > 0;
