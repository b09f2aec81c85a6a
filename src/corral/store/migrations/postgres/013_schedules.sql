-- The latest tick of each recurring schedule that got its run (Store.submit_scheduled): the
-- process that moves it forward submits that tick's run in the same transaction, so a tick
-- gets one run however many workers see it come due.
CREATE TABLE corral_schedules (
    name TEXT PRIMARY KEY,
    last_tick DOUBLE PRECISION NOT NULL,
    fired_at DOUBLE PRECISION
);
