-- Shared contention resources: capacity and rate limits that every process of every worker
-- enforces together. Holders and waiters are rows with an expiry their process renews, so a
-- killed process's slots and queue places come back on their own.
CREATE TABLE corral_resources (
    name         TEXT PRIMARY KEY,
    capacity     INTEGER NOT NULL,
    rpm          INTEGER,
    tpm          INTEGER,
    alpha        REAL NOT NULL,
    tick         INTEGER NOT NULL DEFAULT 0,
    seq          INTEGER NOT NULL DEFAULT 0,
    paused_until REAL NOT NULL DEFAULT 0
);

CREATE TABLE corral_resource_requests (
    resource     TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    weight       REAL NOT NULL,
    tokens       INTEGER NOT NULL,
    arrival_tick INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    state        TEXT NOT NULL,
    expires_at   REAL NOT NULL,
    granted_at   REAL,
    PRIMARY KEY (resource, request_id)
);
CREATE INDEX corral_resource_waiting ON corral_resource_requests (resource, agent_id, seq)
    WHERE state = 'waiting';

CREATE TABLE corral_resource_usage (
    resource   TEXT NOT NULL,
    request_id TEXT NOT NULL,
    at         REAL NOT NULL,
    tokens     INTEGER NOT NULL,
    PRIMARY KEY (resource, request_id)
);
CREATE INDEX corral_resource_usage_window ON corral_resource_usage (resource, at);
