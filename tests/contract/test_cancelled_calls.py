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


async def test_reads_and_writes_cancelled_twice_at_any_point_leave_the_store_usable(
    db_url: str, clock: FakeClock
) -> None:
    """The second cancellation lands while the first one's clean-up waits for the store's
    thread (a waiting worker's look for work cancelled by a freed slot and then by a stop).
    Neither the clean-up nor a COMMIT may be dropped by it: a transaction left open on a
    connection failed every later call there."""
    store = create_store(db_url, StoreConfig(busy_timeout=2.0), clock)
    await store.open()
    try:
        (run_id,) = await store.submit([RunSpec("a")])
        for i in range(120):
            call = asyncio.create_task(store.get(run_id) if i % 2 else store.submit([RunSpec("a")]))
            for _ in range(i % 5):
                await asyncio.sleep(0)
            call.cancel()
            for _ in range((i // 5) % 3):
                await asyncio.sleep(0)
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            run = await asyncio.wait_for(store.get(run_id), 5)
            assert run is not None
        (last,) = await asyncio.wait_for(store.submit([RunSpec("a")]), 5)
        assert await store.get(last) is not None
    finally:
        await store.close()


async def test_a_call_cancelled_twice_raises_cancelled_not_unavailable(
    db_url: str, clock: FakeClock
) -> None:
    """Cancelled a second time while the driver cancels the statement (a worker torn down
    twice; asyncio.run cancelling at exit), the call must still end in CancelledError. On
    PostgreSQL psycopg closes the connection then, and the store reported StoreUnavailable:
    the retention loop (and every loop that retries an unreachable store) took that for an
    outage, went on, and never ended. The retention loop here is the proof."""
    from corral.worker.retention import retention_loop

    store = create_store(db_url, StoreConfig(busy_timeout=2.0), clock)
    await store.open()
    started = asyncio.Event()
    slow = "SELECT pg_sleep(5)" if store.dialect == "postgres" else None

    class SlowPurge:
        """The store, with a purge that takes a while (a long pass over a big backlog)."""

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        async def purge_finished(self, before: float, *, limit: int) -> int:
            started.set()
            if slow is None:
                await asyncio.sleep(5)
            else:
                await store._read(lambda tx: tx.execute(slow))  # type: ignore[attr-defined]
            return 0

    loop_task = asyncio.create_task(retention_loop(SlowPurge(), 1.0, 0.01))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.sleep(0.1)  # the statement is running
        loop_task.cancel()
        await asyncio.sleep(0)
        loop_task.cancel()  # while the driver cancels the statement
        done, _ = await asyncio.wait({loop_task}, timeout=10)
        assert done, "the retention loop went on after being cancelled"
        assert loop_task.cancelled()
    finally:
        loop_task.cancel()
        await store.close()
