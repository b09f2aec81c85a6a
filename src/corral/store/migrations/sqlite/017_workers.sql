-- Each worker's report of itself (Store.report_worker), renewed every third of its lease TTL
-- and deleted when it stops: what `corral workers`, GET /v1/workers and the corral_workers
-- metrics read. A worker killed leaves its row, shown as lost once a lease TTL has passed
-- without a report, and deleted an hour later by the next report of any worker.
CREATE TABLE corral_workers (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    seen_at       REAL NOT NULL,
    lease_ttl     REAL NOT NULL,
    concurrency   INTEGER NOT NULL,
    express_slots INTEGER NOT NULL,
    busy          INTEGER NOT NULL,
    stuck         INTEGER NOT NULL,
    completed     INTEGER NOT NULL,
    draining      INTEGER NOT NULL
);
