-- corral schema v3 (SQLite): API keys of the HTTP service, and the index its queue-wait
-- metric reads. A key is stored only as the SHA-256 of its token; the token is shown once.
CREATE TABLE corral_api_keys (
    id         TEXT PRIMARY KEY,
    key_hash   TEXT NOT NULL UNIQUE,
    tenant     TEXT NOT NULL,
    admin      INTEGER NOT NULL DEFAULT 0,
    label      TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL
);
-- runs by first lease time: /metrics observes the queue wait of runs started since its last scrape
CREATE INDEX corral_runs_started ON corral_runs (started_at) WHERE started_at IS NOT NULL;
