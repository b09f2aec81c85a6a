-- corral schema v1 (PostgreSQL). Times are seconds since the epoch (DOUBLE PRECISION).
CREATE TABLE corral_runs (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    agent            TEXT NOT NULL,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    sort_key         DOUBLE PRECISION NOT NULL,
    available_at     DOUBLE PRECISION NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_epoch      BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at DOUBLE PRECISION,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    result           TEXT,
    error            TEXT,
    parent_id        TEXT,
    root_id          TEXT NOT NULL,
    depth            INTEGER NOT NULL DEFAULT 0,
    budget           DOUBLE PRECISION,
    spent            DOUBLE PRECISION NOT NULL DEFAULT 0,
    children         INTEGER NOT NULL DEFAULT 0,
    awaiting         INTEGER NOT NULL DEFAULT 0,
    wake_at          DOUBLE PRECISION,
    journal_seq      BIGINT NOT NULL DEFAULT 0,
    created_at       DOUBLE PRECISION NOT NULL,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION
);
CREATE UNIQUE INDEX corral_runs_idempotency ON corral_runs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX corral_runs_ready ON corral_runs (tenant, sort_key) WHERE status = 'queued';
CREATE INDEX corral_runs_ready_global ON corral_runs (sort_key) WHERE status = 'queued';
CREATE INDEX corral_runs_leased ON corral_runs (lease_expires_at) WHERE status = 'running';
CREATE INDEX corral_runs_timers ON corral_runs (wake_at) WHERE status = 'waiting';
CREATE INDEX corral_runs_parent ON corral_runs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX corral_runs_listing ON corral_runs (tenant, created_at);

CREATE TABLE corral_journal (
    run_id     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    name       TEXT,
    data       TEXT,
    epoch      INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE corral_plans (
    name       TEXT PRIMARY KEY,
    cap        INTEGER NOT NULL,
    weight     DOUBLE PRECISION NOT NULL,
    max_queued INTEGER NOT NULL
);

CREATE TABLE corral_tenants (
    tenant              TEXT PRIMARY KEY,
    plan                TEXT NOT NULL,
    cap_override        INTEGER,
    weight_override     DOUBLE PRECISION,
    max_queued_override INTEGER,
    cap                 INTEGER NOT NULL,
    weight              DOUBLE PRECISION NOT NULL,
    max_queued          INTEGER NOT NULL,
    queued              INTEGER NOT NULL DEFAULT 0,
    in_flight           INTEGER NOT NULL DEFAULT 0,
    last_served_at      DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX corral_tenants_backlog ON corral_tenants (last_served_at) WHERE queued > 0;

CREATE TABLE corral_settings (
    key   TEXT PRIMARY KEY,
    value INTEGER
);
-- Workers lease from these tables many times a second; keep their statistics fresh without a
-- manual ANALYZE, so the planner never mistakes a burst-filled table for an empty one.
ALTER TABLE corral_runs SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE corral_tenants SET (fillfactor = 50);
