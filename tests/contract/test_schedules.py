"""Recurring runs: a schedule's tick gets exactly one run however many workers offer it, a
schedule begins with the tick after it is first seen, a tick the store cannot take (the tenant
over its quota) is not lost but offered again, and a tick too late to make up for moves the
schedule on without a run."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import pytest

from corral import BackpressureError, Corral, RunContext
from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.dispatch.schedule import Schedule
from corral.models import RunSpec, RunStatus
from corral.store import Store, create_store
from corral.worker.schedules import schedule_loop

pytestmark = pytest.mark.timeout(60)

SPEC = RunSpec("digest", {"n": 1}, tenant="acme")


async def test_a_tick_gets_one_run_and_a_schedule_begins_after_it_is_first_seen(
    store: Store,
) -> None:
    assert await store.submit_scheduled("nightly", 100.0, SPEC) is None  # first seen
    assert await store.schedule_ticks() == {"nightly": (100.0, None)}
    assert await store.submit_scheduled("nightly", 100.0, SPEC) is None  # the same tick
    run_id = await store.submit_scheduled("nightly", 200.0, SPEC)
    assert run_id is not None
    assert await store.submit_scheduled("nightly", 200.0, SPEC) is None  # taken
    assert await store.submit_scheduled("nightly", 150.0, SPEC) is None  # older than the last
    run = await store.get(run_id)
    assert run is not None and run.status is RunStatus.QUEUED
    assert (run.agent, run.input, run.tenant) == ("digest", {"n": 1}, "acme")
    assert (await store.schedule_ticks())["nightly"] == (200.0, 200.0)
    # a tick too late to make up for moves the schedule on without a run
    assert await store.submit_scheduled("nightly", 300.0, SPEC, run=False) is None
    assert await store.submit_scheduled("nightly", 300.0, SPEC) is None
    assert (await store.schedule_ticks())["nightly"] == (300.0, 200.0)
    assert (await store.stats()).queued == 1
    # schedules are independent of each other
    assert await store.submit_scheduled("hourly", 300.0, SPEC) is None
    assert await store.submit_scheduled("hourly", 400.0, SPEC) is not None


async def test_many_callers_on_many_connections_submit_a_tick_once(
    db_url: str, clock: FakeClock
) -> None:
    stores = [create_store(db_url, StoreConfig(), clock) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        await stores[0].submit_scheduled("often", 0.0, SPEC)
        for tick in (10.0, 20.0, 30.0):
            got = await asyncio.gather(
                *(s.submit_scheduled("often", tick, SPEC) for s in stores for _ in range(4))
            )
            assert len([r for r in got if r is not None]) == 1, got
        assert (await stores[0].stats()).queued == 3
    finally:
        for s in stores:
            await s.close()


async def test_a_tick_refused_by_the_tenants_quota_is_kept_for_a_later_try(
    store: Store,
) -> None:
    await store.set_tenant("acme", max_queued=1)
    (blocking,) = await store.submit([RunSpec("other", tenant="acme")])
    await store.submit_scheduled("nightly", 100.0, SPEC)
    with pytest.raises(BackpressureError):
        await store.submit_scheduled("nightly", 200.0, SPEC)
    assert (await store.schedule_ticks())["nightly"] == (100.0, None)  # not taken
    await store.cancel(blocking)
    assert await store.submit_scheduled("nightly", 200.0, SPEC) is not None


async def test_workers_submit_each_tick_once_and_the_runs_run(db_url: str) -> None:
    """Two apps on one database (as two worker processes would be), ticking every second."""
    done: list[float] = []

    def build() -> Corral:
        app = Corral(db_url)

        @app.agent("tick")
        async def tick(ctx: RunContext, input: Any) -> None:
            done.append(asyncio.get_running_loop().time())

        app.schedule("each-second", "tick", {"from": "schedule"}, every=1, tenant="acme")
        return app

    apps = [build(), build()]
    for app in apps:
        await app.open()
    workers = [app.worker(concurrency=2, poll_interval=0.05) for app in apps]
    running = [asyncio.create_task(w.run()) for w in workers]
    try:
        await asyncio.sleep(3.5)
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*running)
    runs = [r async for page in apps[0].iter_runs(agent="tick") for r in page]
    for app in apps:
        await app.close()
    # first seen at one tick, then a run for each tick of the 3.5 s that followed
    assert 3 <= len(runs) <= 4, runs
    created = sorted(r.created_at for r in runs)
    assert all(b - a > 0.5 for a, b in itertools.pairwise(created)), created
    assert all(r.input == {"from": "schedule"} and r.tenant == "acme" for r in runs)
    assert len(done) >= len(runs) - 1  # the last tick's run may have come as they stopped


async def test_a_worker_with_schedules_off_submits_nothing(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("tick")
    async def tick(ctx: RunContext, input: Any) -> None:
        return None

    app.schedule("each-second", "tick", every=1)
    async with app:
        worker = app.worker(poll_interval=0.05, schedules=False)
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(2.2)
        worker.stop()
        await running
        assert await app.store.schedule_ticks() == {}
        assert (await app.stats()).queued == 0


async def _one_pass(store: Store, schedule: Schedule) -> None:
    """The schedule loop's first pass (it runs at once), then the loop stopped."""
    loop = asyncio.create_task(schedule_loop(store, [schedule]))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if (await store.schedule_ticks()).get(schedule.name, (0.0, None))[
            0
        ] >= schedule.latest_tick(store.clock()):
            break
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop


async def test_a_missed_tick_is_made_up_once_within_catch_up_and_skipped_past_it(
    store: Store, clock: FakeClock
) -> None:
    hourly = Schedule("hourly", SPEC, every=3600, catch_up=600)
    clock.now = 10 * 3600 + 5  # just past a tick: the schedule is first seen there
    await _one_pass(store, hourly)
    assert await store.schedule_ticks() == {"hourly": (36000.0, None)}
    # every worker away for the next tick; one comes back 100 s after it: that tick's run
    clock.now = 11 * 3600 + 100
    await _one_pass(store, hourly)
    assert (await store.schedule_ticks())["hourly"][0] == 39600.0
    assert (await store.stats()).queued == 1
    # away for two ticks, back 1,000 s after the latest: past catch_up, no run for either
    clock.now = 14 * 3600 + 1000
    await _one_pass(store, hourly)
    # moved on, with no run since the one above
    assert (await store.schedule_ticks())["hourly"] == (50400.0, 39600.0)


async def test_a_tick_a_few_seconds_late_is_on_time_even_without_catch_up(
    store: Store, clock: FakeClock
) -> None:
    strict = Schedule("strict", SPEC, every=60, catch_up=0)
    clock.now = 600.0
    await _one_pass(store, strict)  # first seen
    clock.now = 660.0 + 5  # the loop (or its worker) was busy for 5 s
    await _one_pass(store, strict)
    assert (await store.schedule_ticks())["strict"] == (660.0, 660.0)
    assert (await store.stats()).queued == 1
    assert (await store.stats()).queued == 1
