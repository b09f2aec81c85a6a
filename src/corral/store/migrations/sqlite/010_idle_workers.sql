-- Workers that wait for work offer their free slots here (PostgreSQL: see the migration of
-- the same name there). SQLite keeps the same schema but hands nothing directly: its
-- processes wake each other over sockets in microseconds, and its lease costs no round trip.
CREATE TABLE corral_idle_workers (
    owner      TEXT PRIMARY KEY,
    slots      INTEGER NOT NULL,
    ttl        REAL NOT NULL,
    lock_key   INTEGER NOT NULL,
    offered_at REAL NOT NULL
);
-- submits take the longest-standing live offer first, reading offers in this order and
-- stopping at the first whose worker is alive
CREATE INDEX corral_idle_workers_order ON corral_idle_workers (offered_at) WHERE slots > 0;
-- runs each tenant had handed to a waiting worker (the corral_handoffs metric)
ALTER TABLE corral_tenants ADD COLUMN handed INTEGER NOT NULL DEFAULT 0;
