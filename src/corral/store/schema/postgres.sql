-- The schema the migrations build (PostgreSQL); written by scripts/dump_schema.py.
CREATE TABLE corral_api_keys (
    id text NOT NULL,
    key_hash text NOT NULL,
    tenant text NOT NULL,
    admin integer DEFAULT 0 NOT NULL,
    label text,
    created_at double precision NOT NULL,
    revoked_at double precision
);

CREATE TABLE corral_idle_workers (
    owner text NOT NULL,
    slots integer NOT NULL,
    ttl double precision NOT NULL,
    lock_key bigint NOT NULL,
    offered_at double precision NOT NULL
);

CREATE TABLE corral_journal (
    run_id text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    name text,
    data text,
    epoch integer NOT NULL,
    created_at double precision NOT NULL
);

CREATE TABLE corral_plans (
    name text NOT NULL,
    cap integer NOT NULL,
    weight double precision NOT NULL,
    max_queued integer NOT NULL
);

CREATE TABLE corral_resource_requests (
    resource text NOT NULL,
    request_id text NOT NULL,
    agent_id text NOT NULL,
    weight double precision NOT NULL,
    tokens integer NOT NULL,
    arrival_tick bigint NOT NULL,
    seq bigint NOT NULL,
    state text NOT NULL,
    expires_at double precision NOT NULL,
    granted_at double precision
);

CREATE TABLE corral_resource_usage (
    resource text NOT NULL,
    request_id text NOT NULL,
    at double precision NOT NULL,
    tokens integer NOT NULL
);

CREATE TABLE corral_resources (
    name text NOT NULL,
    capacity integer NOT NULL,
    rpm integer,
    tpm integer,
    alpha double precision NOT NULL,
    tick bigint DEFAULT 0 NOT NULL,
    seq bigint DEFAULT 0 NOT NULL,
    paused_until double precision DEFAULT 0 NOT NULL
);

CREATE TABLE corral_runs (
    id text NOT NULL,
    tenant text NOT NULL,
    agent text NOT NULL,
    input text NOT NULL,
    status text NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    sort_key double precision NOT NULL,
    available_at double precision NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    max_attempts integer NOT NULL,
    lease_epoch bigint DEFAULT 0 NOT NULL,
    lease_owner text,
    lease_expires_at double precision,
    cancel_requested integer DEFAULT 0 NOT NULL,
    idempotency_key text,
    result text,
    error text,
    parent_id text,
    root_id text NOT NULL,
    depth integer DEFAULT 0 NOT NULL,
    budget double precision,
    spent double precision DEFAULT 0 NOT NULL,
    children integer DEFAULT 0 NOT NULL,
    awaiting integer DEFAULT 0 NOT NULL,
    wake_at double precision,
    journal_seq bigint DEFAULT 0 NOT NULL,
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    leased_at double precision,
    timeout double precision,
    start_by double precision
)
WITH (autovacuum_analyze_scale_factor='0.02', autovacuum_vacuum_scale_factor='0.05');

CREATE TABLE corral_schedules (
    name text NOT NULL,
    last_tick double precision NOT NULL,
    run_tick double precision,
    tenant text,
    definition text,
    created_at double precision,
    paused_at double precision,
    next_tick double precision
);

CREATE TABLE corral_settings (
    key text NOT NULL,
    value integer
);

CREATE TABLE corral_tenants (
    tenant text NOT NULL,
    plan text NOT NULL,
    cap_override integer,
    weight_override double precision,
    max_queued_override integer,
    cap integer NOT NULL,
    weight double precision NOT NULL,
    max_queued integer NOT NULL,
    queued integer DEFAULT 0 NOT NULL,
    in_flight integer DEFAULT 0 NOT NULL,
    last_served_at double precision DEFAULT 0 NOT NULL,
    max_children integer,
    max_depth integer,
    vtime double precision DEFAULT 0 NOT NULL,
    run_cost double precision DEFAULT 1 NOT NULL,
    succeeded bigint DEFAULT 0 NOT NULL,
    failed bigint DEFAULT 0 NOT NULL,
    cancelled bigint DEFAULT 0 NOT NULL,
    redelivered bigint DEFAULT 0 NOT NULL,
    expiry_dead_letters bigint DEFAULT 0 NOT NULL,
    handed bigint DEFAULT 0 NOT NULL
)
WITH (fillfactor='50');

CREATE TABLE corral_waits (
    parent_id text NOT NULL,
    child_id text NOT NULL
);

CREATE TABLE corral_workers (
    id text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at double precision NOT NULL,
    seen_at double precision NOT NULL,
    lease_ttl double precision NOT NULL,
    concurrency integer NOT NULL,
    express_slots integer NOT NULL,
    busy integer NOT NULL,
    stuck integer NOT NULL,
    completed bigint NOT NULL,
    draining boolean NOT NULL,
    agents text DEFAULT '[]'::text NOT NULL
);

ALTER TABLE ONLY corral_api_keys
    ADD CONSTRAINT corral_api_keys_key_hash_key UNIQUE (key_hash);

ALTER TABLE ONLY corral_api_keys
    ADD CONSTRAINT corral_api_keys_pkey PRIMARY KEY (id);

ALTER TABLE ONLY corral_idle_workers
    ADD CONSTRAINT corral_idle_workers_pkey PRIMARY KEY (owner);

ALTER TABLE ONLY corral_journal
    ADD CONSTRAINT corral_journal_pkey PRIMARY KEY (run_id, seq);

ALTER TABLE ONLY corral_plans
    ADD CONSTRAINT corral_plans_pkey PRIMARY KEY (name);

ALTER TABLE ONLY corral_resource_requests
    ADD CONSTRAINT corral_resource_requests_pkey PRIMARY KEY (resource, request_id);

ALTER TABLE ONLY corral_resource_usage
    ADD CONSTRAINT corral_resource_usage_pkey PRIMARY KEY (resource, request_id);

ALTER TABLE ONLY corral_resources
    ADD CONSTRAINT corral_resources_pkey PRIMARY KEY (name);

ALTER TABLE ONLY corral_runs
    ADD CONSTRAINT corral_runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY corral_schedules
    ADD CONSTRAINT corral_schedules_pkey PRIMARY KEY (name);

ALTER TABLE ONLY corral_settings
    ADD CONSTRAINT corral_settings_pkey PRIMARY KEY (key);

ALTER TABLE ONLY corral_tenants
    ADD CONSTRAINT corral_tenants_pkey PRIMARY KEY (tenant);

ALTER TABLE ONLY corral_waits
    ADD CONSTRAINT corral_waits_pkey PRIMARY KEY (parent_id, child_id);

ALTER TABLE ONLY corral_workers
    ADD CONSTRAINT corral_workers_pkey PRIMARY KEY (id);

CREATE INDEX corral_idle_workers_order ON corral_idle_workers USING btree (offered_at) WHERE (slots > 0);

CREATE INDEX corral_resource_usage_window ON corral_resource_usage USING btree (resource, at);

CREATE INDEX corral_resource_waiting ON corral_resource_requests USING btree (resource, agent_id, seq) WHERE (state = 'waiting'::text);

CREATE UNIQUE INDEX corral_runs_idempotency ON corral_runs USING btree (tenant, idempotency_key) WHERE (idempotency_key IS NOT NULL);

CREATE INDEX corral_runs_leased ON corral_runs USING btree (lease_expires_at) WHERE (status = 'running'::text);

CREATE INDEX corral_runs_listing ON corral_runs USING btree (tenant, id);

CREATE INDEX corral_runs_parent ON corral_runs USING btree (parent_id) WHERE (parent_id IS NOT NULL);

CREATE INDEX corral_runs_queued_age ON corral_runs USING btree (tenant, available_at) WHERE (status = 'queued'::text);

CREATE INDEX corral_runs_ready ON corral_runs USING btree (tenant, sort_key) WHERE (status = 'queued'::text);

CREATE INDEX corral_runs_start_by ON corral_runs USING btree (start_by) WHERE ((status = 'queued'::text) AND (attempts = 0) AND (start_by IS NOT NULL));

CREATE INDEX corral_runs_started ON corral_runs USING btree (started_at) WHERE (started_at IS NOT NULL);

CREATE INDEX corral_runs_timers ON corral_runs USING btree (wake_at) WHERE (status = 'waiting'::text);

CREATE INDEX corral_schedules_due ON corral_schedules USING btree (next_tick) WHERE ((definition IS NOT NULL) AND (paused_at IS NULL));

CREATE INDEX corral_schedules_stored ON corral_schedules USING btree (tenant) WHERE (definition IS NOT NULL);

CREATE INDEX corral_tenants_lease_order ON corral_tenants USING btree (vtime, (((in_flight)::double precision / weight)), last_served_at, tenant) WHERE (queued > 0);

CREATE INDEX corral_tenants_vtime_all ON corral_tenants USING btree (vtime);

CREATE INDEX corral_waits_child ON corral_waits USING btree (child_id);
