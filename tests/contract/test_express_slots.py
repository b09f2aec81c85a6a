"""Express slots: a lease limited to light tenants (``light_below``), and a worker whose extra
slots only such tenants' runs take, so a quiet tenant's run starts while a backlogged one
holds every regular slot."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from corral import Corral, RunContext
from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.models import RunSpec, RunStatus
from corral.store import Store, create_store

pytestmark = pytest.mark.timeout(60)

TTL = 10.0


async def test_a_light_lease_serves_only_tenants_below_the_bound(
    store: Store, clock: FakeClock
) -> None:
    await store.submit([RunSpec("a", tenant="heavy") for _ in range(5)])
    assert len(await store.lease("w", TTL, 3)) == 3  # heavy: 3 in flight
    await store.submit([RunSpec("a", tenant="mid") for _ in range(2)])
    (first,) = await store.lease("w", TTL, 1)
    assert first.tenant == "mid"  # the newly eligible tenant goes first: mid has 1 in flight
    await store.submit([RunSpec("a", tenant="light") for _ in range(3)])
    clock.advance(0.5)

    got = Counter(x.tenant for x in await store.lease("w", TTL, 10, light_below=2))
    assert got == {"light": 2, "mid": 1}  # each tenant up to 2 in flight, heavy none
    assert await store.lease("w", TTL, 10, light_below=2) == []
    stats = await store.stats()
    in_flight = {t.tenant: t.in_flight for t in stats.tenants}
    assert in_flight == {"heavy": 3, "mid": 2, "light": 2}
    # an ordinary lease still serves everyone
    rest = Counter(x.tenant for x in await store.lease("w", TTL, 10))
    assert rest == {"heavy": 2, "light": 1}


async def test_a_quiet_tenants_run_starts_in_an_express_slot(db_url: str) -> None:
    app = Corral(db_url)
    release = asyncio.Event()
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    quiet_started = asyncio.Event()

    @app.agent("hold")
    async def hold(ctx: RunContext, input: Any) -> None:
        running[ctx.tenant] += 1
        most[ctx.tenant] = max(most[ctx.tenant], running[ctx.tenant])
        most["all"] = max(most["all"], sum(running.values()))
        if ctx.tenant == "quiet":
            quiet_started.set()
        try:
            await release.wait()
        finally:
            running[ctx.tenant] -= 1

    async with app:
        await app.submit_many([{"agent": "hold", "tenant": "noisy"} for _ in range(6)])
        worker = app.worker(concurrency=2, express_slots=1, poll_interval=0.05)
        task = asyncio.create_task(worker.run(until_idle=True))
        for _ in range(200):
            if running["noisy"] == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the express slot stays empty: noisy is not light
        assert running["noisy"] == 2 and worker.in_flight == 2
        quiet = await app.submit("hold", tenant="quiet")
        await asyncio.wait_for(quiet_started.wait(), 5)  # while noisy holds both slots
        assert running["noisy"] == 2
        release.set()
        await asyncio.wait_for(task, 30)
        run = await app.get(quiet)
    assert run.status == RunStatus.SUCCEEDED
    assert most["noisy"] == 2 and most["all"] == 3


async def test_express_slots_are_validated(db_url: str) -> None:
    from corral.errors import InvalidInput

    app = Corral(db_url)
    with pytest.raises(InvalidInput, match="express_slots"):
        app.worker(express_slots=-1)
    with pytest.raises(InvalidInput, match="express_below"):
        app.worker(express_slots=1, express_below=0)


async def test_waiting_for_light_work_ignores_a_heavy_tenants_work(
    db_url: str, clock: FakeClock
) -> None:
    """A worker whose regular slots are all busy waits for light tenants' work only: on
    PostgreSQL the notification carries the tenant's in-flight count, SQLite looks."""
    waiter = create_store(db_url, StoreConfig(), clock)
    other = create_store(db_url, StoreConfig(), clock)
    await waiter.open()
    await other.open()
    try:
        await other.submit([RunSpec("a", tenant="heavy") for _ in range(3)])
        assert len(await other.lease("w", TTL, 2)) == 2  # heavy: 2 in flight, 1 queued
        waiting = asyncio.create_task(waiter.wait_for_work(10.0, light_below=2))
        await asyncio.sleep(0.1)
        await other.submit([RunSpec("a", tenant="heavy")])  # still 2 in flight: not light
        await asyncio.sleep(0.4)
        assert not waiting.done()
        await other.submit([RunSpec("a", tenant="light")])
        await asyncio.wait_for(waiting, 3.0)
    finally:
        await waiter.close()
        await other.close()


async def test_sqlite_light_wait_ignores_runs_not_yet_due(tmp_path: Path) -> None:
    """SQLite looks for light work after each commit: a light tenant's run that is not due yet
    (retry backoff, not_before) must not wake a worker into an empty lease over and over."""
    clock = FakeClock()
    store = create_store(f"sqlite:///{tmp_path / 'light.db'}", StoreConfig(), clock)
    other = create_store(f"sqlite:///{tmp_path / 'light.db'}", StoreConfig(), clock)
    await store.open()
    await other.open()
    try:
        waiting = asyncio.create_task(store.wait_for_work(10.0, light_below=1))
        await asyncio.sleep(0.05)
        await other.submit([RunSpec("a", tenant="later", not_before=clock.now + 60)])
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await other.submit([RunSpec("a", tenant="now")])
        await asyncio.wait_for(waiting, 3.0)
    finally:
        await store.close()
        await other.close()
