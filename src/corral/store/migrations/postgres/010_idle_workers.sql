-- Workers that wait for work offer their free slots here, and a submit that finds an offer
-- hands its run to that worker in its own transaction: the run is stored already leased and
-- the worker hears of it by a notification that carries the lease, so no second commit (a
-- lease) stands between accepting a run and starting it (docs/architecture.md, "Handoff").
-- lock_key is an advisory lock that the worker's listening session holds while it lives: a
-- submit hands nothing to an offer whose lock is free (its worker died or lost its session).
CREATE TABLE corral_idle_workers (
    owner      TEXT PRIMARY KEY,
    slots      INTEGER NOT NULL,
    ttl        DOUBLE PRECISION NOT NULL,
    lock_key   BIGINT NOT NULL,
    offered_at DOUBLE PRECISION NOT NULL
);
-- submits take the longest-standing live offer first, reading offers in this order and
-- stopping at the first whose worker is alive
CREATE INDEX corral_idle_workers_order ON corral_idle_workers (offered_at) WHERE slots > 0;
-- runs each tenant had handed to a waiting worker (the corral_handoffs metric)
ALTER TABLE corral_tenants ADD COLUMN handed BIGINT NOT NULL DEFAULT 0;
