"""A store call cancelled part way (an agent's own timeout around a ctx call, a draining worker
cancelling its runs) leaves the store as usable as before, for this process and for others."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.models import RunSpec, RunStatus
from corral.store import create_store

pytestmark = pytest.mark.timeout(60)


async def test_writes_cancelled_at_any_point_leave_the_store_usable(
    db_url: str, clock: FakeClock
) -> None:
    store = create_store(db_url, StoreConfig(busy_timeout=2.0), clock)
    other = create_store(db_url, StoreConfig(busy_timeout=2.0), clock)  # another process
    await store.open()
    await other.open()
    try:
        for i in range(60):
            call = asyncio.create_task(store.submit([RunSpec("a")]))
            for _ in range(i % 6):  # cancel at different points of the transaction
                await asyncio.sleep(0)
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
        (mine,) = await asyncio.wait_for(store.submit([RunSpec("a")]), 5)
        (theirs,) = await asyncio.wait_for(other.submit([RunSpec("a")]), 5)
        leased = {lease.run_id for lease in await store.lease("w", 30.0, 1000)}
        assert {mine, theirs} <= leased
        # whatever the cancelled calls committed, they committed whole: counters match rows
        stats = await other.stats()
        running = await other.list_runs(status=RunStatus.RUNNING, limit=1000)
        assert stats.in_flight == len(running) == len(leased)
        assert stats.queued == 0
    finally:
        await store.close()
        await other.close()
