"""Recurring runs: each worker submits the runs of its app's schedules as their ticks come.

Every worker of a deployment runs this loop, and the store lets one of them have each tick
(``Store.submit_ticks``: the schedule's last tick moves forward and the tick's run is
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
import random
from collections.abc import Sequence

from corral.dispatch.schedule import Schedule, ScheduledTick
from corral.store import Store

log = logging.getLogger(__name__)

#: a schedule as the loop tells its decided ticks apart: its name and its stored definition
#: (None for one in code)
_Key = tuple[str, str | None]

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
#: ticks offered to the store in one transaction: few enough that the write lock (SQLite's
#: is the whole database's) is held for milliseconds, not the whole herd
TICK_BATCH = 100


async def schedule_loop(
    store: Store, schedules: Sequence[Schedule], *, stored: bool = False
) -> None:
    """Submit the runs of ``schedules`` (and, with ``stored``, of the schedules created at
    run time) as their ticks come, until cancelled."""
    offered: dict[_Key, float] = {}  # per schedule: the latest tick the store has decided on
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
        offered = {_key(s): offered[_key(s)] for s in active if _key(s) in offered}
        offers: list[ScheduledTick] = []
        for schedule in active:
            tick = schedule.latest_tick(now)
            if offered.get(_key(schedule), -math.inf) >= tick:
                continue
            # a tick missed by more than catch_up moves the schedule on without a run
            late = now - tick > max(schedule.catch_up, ON_TIME)
            offers.append(ScheduledTick(schedule, tick, submit=not late))
        retry = await _offer(store, offers, offered)
        upcoming = min((s.next_tick(now) for s in active), default=math.inf)
        if stored:
            upcoming = min(upcoming, next_reload)
        wait = RETRY_INTERVAL if retry else upcoming - store.clock()
        await asyncio.sleep(min(max(wait, 0.0), MAX_SLEEP))


def _key(schedule: Schedule) -> _Key:
    """Which ``offered`` entry is ``schedule``'s. Not its name alone: the store refuses the
    tick of a replaced schedule's old definition, and the loop notes it as decided; noted by
    name, the new definition read a moment later found its own tick decided and passed it
    over."""
    return (schedule.name, schedule.definition)


async def _offer(store: Store, offers: list[ScheduledTick], offered: dict[_Key, float]) -> bool:
    """Offer the due ticks to the store, ``TICK_BATCH`` to a transaction, and note in
    ``offered`` those it decided on. True when some must be offered again.

    Every worker offers the same ticks at the same moment (a thousand tenants' "every day
    at 7"). Each takes the batches in an order of its own, and the store passes over, without
    a lock, the ticks another worker has taken already: so the workers share the batches out
    instead of each contending for every tick."""
    offers.sort(key=lambda o: (o.schedule.run.tenant, o.schedule.name))
    batches = [offers[i : i + TICK_BATCH] for i in range(0, len(offers), TICK_BATCH)]
    random.shuffle(batches)
    retry = False
    for batch in batches:
        try:
            results = await store.submit_ticks(batch)
        except Exception as exc:  # the next pass offers them again
            log.warning("%d schedule ticks could not be offered: %s", len(batch), exc)
            retry = True
            continue
        refused: dict[str, list[str]] = {}  # per error: the schedules it kept from a run
        for offer, result in zip(batch, results, strict=True):
            name = offer.schedule.name
            if result.error is not None:
                refused.setdefault(str(result.error), []).append(name)
                continue
            offered[_key(offer.schedule)] = offer.tick
            if result.run_id is not None:
                log.info("schedule %s submitted run %s", name, result.run_id)
        for error, names in refused.items():  # one line for a tenant's many schedules
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            log.warning("schedule %s%s could not submit its run: %s", names[0], more, error)
        retry |= bool(refused)
    return retry
