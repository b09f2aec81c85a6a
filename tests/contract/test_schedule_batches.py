"""Ticks offered in batches (Store.submit_ticks), as every worker offers the ticks due at one
moment: each tenant's ticks stand or fall together with its quota while the other tenants'
runs are submitted, many workers offering overlapping batches at once still give each tick
exactly one run (and, on PostgreSQL, never deadlock), and ticks taken already are passed
over without waiting for the write lock."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator

import psycopg
import pytest

from corral import BackpressureError
from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.dispatch.schedule import Schedule, ScheduledTick
from corral.models import RunSpec
from corral.store import Store, create_store
from corral.worker.schedules import schedule_loop

pytestmark = pytest.mark.timeout(60)


def every_minute(name: str, tenant: str) -> Schedule:
    return Schedule(name, RunSpec("digest", {"of": name}, tenant=tenant), every=60)


def ticks(schedules: list[Schedule], tick: float, *, submit: bool = True) -> list[ScheduledTick]:
    return [ScheduledTick(s, tick, submit=submit) for s in schedules]


async def test_a_tenant_over_its_quota_keeps_its_ticks_and_the_others_get_their_runs(
    store: Store,
) -> None:
    a1, a2 = every_minute("a1", "acme"), every_minute("a2", "acme")
    b1, b2 = every_minute("b1", "globex"), every_minute("b2", "globex")
    first = await store.submit_ticks(ticks([a1, a2, b1, b2], 60.0))
    assert [(r.run_id, r.error) for r in first] == [(None, None)] * 4  # first seen
    await store.set_tenant("acme", max_queued=1)
    (blocking,) = await store.submit([RunSpec("other", tenant="acme")])

    fresh = every_minute("c1", "globex")  # seen for the first time in this batch
    batch = [*ticks([a1, a2, b1], 120.0), ScheduledTick(b2, 120.0, submit=False)]
    got = await store.submit_ticks([*batch, ScheduledTick(fresh, 120.0)])

    assert [type(r.error) for r in got[:2]] == [BackpressureError, BackpressureError]
    assert [r.run_id for r in got[:2]] == [None, None]
    assert got[2].error is None and got[2].run_id is not None
    assert (got[3].run_id, got[3].error) == (None, None)  # skipped, unrun
    assert (got[4].run_id, got[4].error) == (None, None)  # first seen
    marks = await store.schedule_ticks()
    assert marks["a1"] == marks["a2"] == (60.0, None)  # not taken: offered again later
    assert marks["b1"] == (120.0, 120.0)
    assert marks["b2"] == (120.0, None)
    assert marks["c1"] == (120.0, None)
    run = await store.get(got[2].run_id)
    assert run is not None and (run.tenant, run.input) == ("globex", {"of": "b1"})
    assert (await store.stats()).queued == 2  # the blocking run and b1's

    await store.set_tenant("acme", max_queued=3)
    again = await store.submit_ticks(ticks([a1, a2], 120.0))
    assert all(r.run_id is not None and r.error is None for r in again)
    assert (await store.stats()).queued == 4
    await store.cancel(blocking)


async def test_many_workers_offering_overlapping_batches_give_each_tick_one_run(
    db_url: str, clock: FakeClock
) -> None:
    schedules = [every_minute(f"s{i:02}", f"tenant-{i % 5}") for i in range(60)]
    stores = [create_store(db_url, StoreConfig(), clock) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        await stores[0].submit_ticks(ticks(schedules, 60.0))
        rng = random.Random(7)

        async def worker(store: Store, size: int) -> list[str]:
            # each worker cuts the ticks differently and takes its batches in its own order
            offers = ticks(rng.sample(schedules, len(schedules)), 120.0)
            batches = [offers[i : i + size] for i in range(0, len(offers), size)]
            runs: list[str] = []
            for batch in batches:
                for result in await store.submit_ticks(batch):
                    assert result.error is None, result.error
                    if result.run_id is not None:
                        runs.append(result.run_id)
            return runs

        sizes = (7, 13, 25, 60)
        got = await asyncio.gather(*(worker(s, n) for s, n in zip(stores, sizes, strict=True)))
        runs = [run_id for part in got for run_id in part]
        assert len(runs) == len(set(runs)) == 60
        marks = await stores[0].schedule_ticks()
        assert all(marks[s.name] == (120.0, 120.0) for s in schedules)
        assert (await stores[0].stats()).queued == 60
    finally:
        for s in stores:
            await s.close()


@contextlib.asynccontextmanager
async def write_lock_held(db_url: str) -> AsyncIterator[None]:
    """Another process's transaction holding what a tick's claim needs: SQLite's write lock,
    or on PostgreSQL the schedules' rows."""
    if db_url.startswith("sqlite"):
        blocker = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await conn.execute("SELECT name FROM corral_schedules FOR UPDATE")
        try:
            yield
        finally:
            await conn.rollback()


async def test_ticks_taken_already_are_passed_over_without_waiting_for_the_write_lock(
    db_url: str, clock: FakeClock
) -> None:
    schedules = [every_minute(f"s{i}", "acme") for i in range(3)]
    store = create_store(db_url, StoreConfig(), clock)
    await store.open()
    try:
        await store.submit_ticks(ticks(schedules, 60.0))
        taken = await store.submit_ticks(ticks(schedules, 120.0))
        assert all(r.run_id is not None for r in taken)
        async with write_lock_held(db_url):
            # the lock is real: a tick not yet taken waits for it
            waiting = asyncio.ensure_future(store.submit_ticks(ticks(schedules, 180.0)))
            done, _ = await asyncio.wait([waiting], timeout=0.5)
            assert not done
            # a worker late to the ticks another took does not wait
            late = await asyncio.wait_for(store.submit_ticks(ticks(schedules, 120.0)), 2.0)
            assert [(r.run_id, r.error) for r in late] == [(None, None)] * 3
        claimed = await asyncio.wait_for(waiting, 20.0)
        assert all(r.run_id is not None for r in claimed)
    finally:
        await store.close()


async def test_worker_loops_share_a_herd_of_ticks_and_offer_a_refused_tenants_again(
    db_url: str, clock: FakeClock
) -> None:
    """Three workers' schedule loops, 250 schedules due at one moment (several batches
    each): a run per tick, and the ticks of a tenant over its quota offered again until it
    has room."""
    schedules = [every_minute(f"h{i:03}", f"tenant-{i % 5}") for i in range(250)]
    stores = [create_store(db_url, StoreConfig(), clock) for _ in range(3)]
    for s in stores:
        await s.open()
    loops: list[asyncio.Task[None]] = []
    try:
        store = stores[0]
        clock.now = 600.0
        await store.submit_ticks(ticks(schedules, 600.0))  # first seen
        await store.set_tenant("tenant-0", max_queued=1)
        (blocking,) = await store.submit([RunSpec("other", tenant="tenant-0")])
        clock.now = 661.0
        loops = [asyncio.create_task(schedule_loop(s, schedules)) for s in stores]

        async def queued_reaches(n: int) -> None:
            for _ in range(400):
                if (await store.stats()).queued >= n:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"fewer than {n} runs queued after 20 s")

        await queued_reaches(201)  # the blocking run and 200 ticks'
        marks = await store.schedule_ticks()
        refused = [s.name for s in schedules if s.run.tenant == "tenant-0"]
        assert all(marks[name] == (600.0, None) for name in refused)
        await store.cancel(blocking)
        await store.set_tenant("tenant-0", max_queued=100)
        await queued_reaches(250)
        await asyncio.sleep(0.3)  # nothing more comes
        assert (await store.stats()).queued == 250
        marks = await store.schedule_ticks()
        assert all(marks[s.name] == (660.0, 660.0) for s in schedules)
    finally:
        for loop in loops:
            loop.cancel()
        for loop in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        for s in stores:
            await s.close()
