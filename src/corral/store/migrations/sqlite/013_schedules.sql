-- Each recurring schedule's latest tick (Store.submit_scheduled): the process that moves it
-- forward to a tick submits that tick's run in the same transaction, so a tick gets one run
-- however many workers see it come due.
CREATE TABLE corral_schedules (
    name TEXT PRIMARY KEY,
    last_tick REAL NOT NULL,
    -- the latest tick that got a run (NULL: none yet)
    run_tick REAL
);
