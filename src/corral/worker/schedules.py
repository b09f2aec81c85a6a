"""Recurring runs: each worker submits the runs of its app's schedules as their ticks come.

Every worker of a deployment runs this loop, and the store lets one of them have each tick
(``Store.submit_scheduled``: the schedule's last tick moves forward and the tick's run is
inserted in one transaction), so a tick gets one run whether one worker runs or fifty, and
none is lost to a worker that dies between the two. The loop sleeps until the next tick of
any schedule, then offers every due tick to the store. A tick the store could not take (the
database briefly away, the tenant over its queued quota) is offered again a second later
while it is within the schedule's ``catch_up``; a tick older than that is skipped, and only a
schedule's latest tick is ever offered, so a worker coming back after an outage submits at
most one run per schedule.

Schedules created at run time (``Corral.create_schedule``) are read from the store every
``RELOAD_INTERVAL`` seconds: those whose next tick falls before the following read (the
store keeps each one's next tick, so a worker never reads them all). The store refuses a
tick of one deleted, replaced or paused since.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

from corral.dispatch.schedule import Schedule
from corral.store import Store

log = logging.getLogger(__name__)

#: seconds between two offers of a tick the store could not take
RETRY_INTERVAL = 1.0
#: longest sleep between two looks at the clock (a clock that jumps is noticed this soon)
MAX_SLEEP = 60.0
#: seconds late a tick still counts as on time, whatever its schedule's catch_up: the loop
#: wakes a little after each tick, and a busy worker (or database) later still
ON_TIME = 30.0
#: seconds between two reads of the schedules created at run time: a new schedule's first
#: tick comes at most this late (well within ON_TIME)
RELOAD_INTERVAL = 5.0


async def schedule_loop(
    store: Store, schedules: Sequence[Schedule], *, stored: bool = False
) -> None:
    """Submit the runs of ``schedules`` (and, with ``stored``, of the schedules created at
    run time) as their ticks come, until cancelled."""
    offered: dict[str, float] = {}  # per schedule: the latest tick the store has decided on
    created: list[Schedule] = []
    next_reload = -math.inf
    while True:
        now = store.clock()
        if stored and now >= next_reload:
            try:
                created = await store.due_schedules(now + RELOAD_INTERVAL)
            except Exception as exc:  # keep the ones read before; read again next time
                log.warning("could not read the stored schedules: %s", exc)
            next_reload = now + RELOAD_INTERVAL
        active = [*schedules, *created]
        offered = {s.name: offered[s.name] for s in active if s.name in offered}
        retry = False
        for schedule in active:
            tick = schedule.latest_tick(now)
            if offered.get(schedule.name, -math.inf) >= tick:
                continue
            # a tick missed by more than catch_up moves the schedule on without a run
            late = now - tick > max(schedule.catch_up, ON_TIME)
            try:
                run_id = await store.submit_scheduled(
                    schedule.name,
                    tick,
                    schedule.run,
                    run=not late,
                    definition=schedule.definition,
                )
            except Exception as exc:  # the next pass offers the tick again
                log.warning("schedule %s could not submit its run: %s", schedule.name, exc)
                retry = True
                continue
            offered[schedule.name] = tick
            if run_id is not None:
                log.info("schedule %s submitted run %s", schedule.name, run_id)
        upcoming = min((s.next_tick(now) for s in active), default=math.inf)
        if stored:
            upcoming = min(upcoming, next_reload)
        wait = RETRY_INTERVAL if retry else upcoming - store.clock()
        await asyncio.sleep(min(max(wait, 0.0), MAX_SLEEP))
