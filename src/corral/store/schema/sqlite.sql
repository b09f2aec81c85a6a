-- The schema the migrations build (SQLite); written by scripts/dump_schema.py.
CREATE TABLE corral_api_keys (
    id         TEXT PRIMARY KEY,
    key_hash   TEXT NOT NULL UNIQUE,
    tenant     TEXT NOT NULL,
    admin      INTEGER NOT NULL DEFAULT 0,
    label      TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL
);

CREATE TABLE corral_idle_workers (
    owner      TEXT PRIMARY KEY,
    slots      INTEGER NOT NULL,
    ttl        REAL NOT NULL,
    lock_key   INTEGER NOT NULL,
    offered_at REAL NOT NULL
);

CREATE TABLE corral_journal (
    run_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    name       TEXT,
    data       TEXT,
    epoch      INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE corral_plans (
    name       TEXT PRIMARY KEY,
    cap        INTEGER NOT NULL,
    weight     REAL NOT NULL,
    max_queued INTEGER NOT NULL
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

CREATE TABLE corral_resource_usage (
    resource   TEXT NOT NULL,
    request_id TEXT NOT NULL,
    at         REAL NOT NULL,
    tokens     INTEGER NOT NULL,
    PRIMARY KEY (resource, request_id)
);

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

CREATE TABLE corral_runs (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    agent            TEXT NOT NULL,
    input            TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    sort_key         REAL NOT NULL,
    available_at     REAL NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    lease_epoch      INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    result           TEXT,
    error            TEXT,
    parent_id        TEXT,
    root_id          TEXT NOT NULL,
    depth            INTEGER NOT NULL DEFAULT 0,
    budget           REAL,
    spent            REAL NOT NULL DEFAULT 0,
    children         INTEGER NOT NULL DEFAULT 0,
    awaiting         INTEGER NOT NULL DEFAULT 0,
    wake_at          REAL,
    journal_seq      INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL
, leased_at REAL, timeout REAL, start_by REAL);

CREATE TABLE corral_schedules (
    name TEXT PRIMARY KEY,
    last_tick REAL NOT NULL,
    -- the latest tick that got a run (NULL: none yet)
    run_tick REAL
, tenant TEXT, definition TEXT, created_at REAL, paused_at REAL, next_tick REAL);

CREATE TABLE corral_settings (
    key   TEXT PRIMARY KEY,
    value INTEGER
);

CREATE TABLE corral_tenants (
    tenant              TEXT PRIMARY KEY,
    plan                TEXT NOT NULL,
    cap_override        INTEGER,
    weight_override     REAL,
    max_queued_override INTEGER,
    cap                 INTEGER NOT NULL,
    weight              REAL NOT NULL,
    max_queued          INTEGER NOT NULL,
    queued              INTEGER NOT NULL DEFAULT 0,
    in_flight           INTEGER NOT NULL DEFAULT 0,
    last_served_at      REAL NOT NULL DEFAULT 0
, max_children INTEGER, max_depth INTEGER, vtime REAL NOT NULL DEFAULT 0, run_cost REAL NOT NULL DEFAULT 1, succeeded INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, cancelled INTEGER NOT NULL DEFAULT 0, redelivered INTEGER NOT NULL DEFAULT 0, expiry_dead_letters INTEGER NOT NULL DEFAULT 0, handed INTEGER NOT NULL DEFAULT 0);

CREATE TABLE corral_waits (
    parent_id TEXT NOT NULL,
    child_id  TEXT NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);

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
, agents TEXT NOT NULL DEFAULT '[]');

CREATE INDEX corral_idle_workers_order ON corral_idle_workers (offered_at) WHERE slots > 0;

CREATE INDEX corral_resource_usage_window ON corral_resource_usage (resource, at);

CREATE INDEX corral_resource_waiting ON corral_resource_requests (resource, agent_id, seq)
    WHERE state = 'waiting';

CREATE UNIQUE INDEX corral_runs_idempotency ON corral_runs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE INDEX corral_runs_leased ON corral_runs (lease_expires_at) WHERE status = 'running';

CREATE INDEX corral_runs_listing ON corral_runs (tenant, id);

CREATE INDEX corral_runs_parent ON corral_runs (parent_id) WHERE parent_id IS NOT NULL;

CREATE INDEX corral_runs_ready ON corral_runs (tenant, sort_key) WHERE status = 'queued';

CREATE INDEX corral_runs_start_by ON corral_runs (start_by)
    WHERE status = 'queued' AND attempts = 0 AND start_by IS NOT NULL;

CREATE INDEX corral_runs_started ON corral_runs (started_at) WHERE started_at IS NOT NULL;

CREATE INDEX corral_runs_timers ON corral_runs (wake_at) WHERE status = 'waiting';

CREATE INDEX corral_schedules_due ON corral_schedules (next_tick)
    WHERE definition IS NOT NULL AND paused_at IS NULL;

CREATE INDEX corral_schedules_stored ON corral_schedules (tenant) WHERE definition IS NOT NULL;

CREATE INDEX corral_tenants_lease_order
    ON corral_tenants (vtime, in_flight / weight, last_served_at, tenant) WHERE queued > 0;

CREATE INDEX corral_tenants_vtime_all ON corral_tenants (vtime);

CREATE INDEX corral_waits_child ON corral_waits (child_id);
