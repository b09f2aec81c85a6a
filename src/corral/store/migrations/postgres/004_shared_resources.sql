-- Shared contention resources: capacity and rate limits that every process of every worker
-- enforces together. Holders and waiters are rows with an expiry their process renews, so a
-- killed process's slots and queue places come back on their own.
CREATE TABLE corral_resources (
    name         TEXT PRIMARY KEY,
    capacity     INTEGER NOT NULL,
    rpm          INTEGER,
    tpm          INTEGER,
    alpha        DOUBLE PRECISION NOT NULL,
    tick         BIGINT NOT NULL DEFAULT 0,
    seq          BIGINT NOT NULL DEFAULT 0,
    paused_until DOUBLE PRECISION NOT NULL DEFAULT 0
);

CREATE TABLE corral_resource_requests (
    resource     TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    weight       DOUBLE PRECISION NOT NULL,
    tokens       INTEGER NOT NULL,
    arrival_tick BIGINT NOT NULL,
    seq          BIGINT NOT NULL,
    state        TEXT NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL,
    granted_at   DOUBLE PRECISION,
    PRIMARY KEY (resource, request_id)
);
CREATE INDEX corral_resource_waiting ON corral_resource_requests (resource, agent_id, seq)
    WHERE state = 'waiting';

CREATE TABLE corral_resource_usage (
    resource   TEXT NOT NULL,
    request_id TEXT NOT NULL,
    at         DOUBLE PRECISION NOT NULL,
    tokens     INTEGER NOT NULL,
    PRIMARY KEY (resource, request_id)
);
CREATE INDEX corral_resource_usage_window ON corral_resource_usage (resource, at);
