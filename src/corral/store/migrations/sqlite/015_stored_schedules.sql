-- Schedules created at run time (Corral.create_schedule, POST /v1/schedules) rather than
-- declared in code: the row carries the schedule itself. Its name is "tenant/name", so each
-- tenant names its own schedules; schedules declared in code keep a NULL definition.
ALTER TABLE corral_schedules ADD COLUMN tenant TEXT;
ALTER TABLE corral_schedules ADD COLUMN definition TEXT;
ALTER TABLE corral_schedules ADD COLUMN created_at REAL;
-- when the schedule was paused (NULL: it runs); a paused schedule's ticks get no run
ALTER TABLE corral_schedules ADD COLUMN paused_at REAL;
-- the schedule's first tick after its last (workers read only the stored schedules due soon)
ALTER TABLE corral_schedules ADD COLUMN next_tick REAL;
CREATE INDEX corral_schedules_stored ON corral_schedules (tenant) WHERE definition IS NOT NULL;
CREATE INDEX corral_schedules_due ON corral_schedules (next_tick)
    WHERE definition IS NOT NULL AND paused_at IS NULL;
