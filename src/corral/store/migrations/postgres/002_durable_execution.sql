-- Durable execution: which runs a waiting parent awaits, and per-tenant fan-out limits.
CREATE TABLE corral_waits (
    parent_id TEXT NOT NULL,
    child_id  TEXT NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX corral_waits_child ON corral_waits (child_id);
ALTER TABLE corral_tenants ADD COLUMN max_children INTEGER;
ALTER TABLE corral_tenants ADD COLUMN max_depth INTEGER;
