"""A database crash costs a pause, not lost or repeated work: PostgreSQL stopped the way a crash
stops it (every backend killed) and started again under a running worker process. The test
runs a server of its own, since it must crash it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from corral import Corral, StoreUnavailable
from corral.models import RunStatus
from corral.store.postgres import POOL_WAIT
from tests.integration.test_crash_fencing_drain import completions
from tests.support.postgres import ThrowawayPostgres
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.timeout(240)

T = TypeVar("T")


async def _once_reachable(call: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
    """``call()``, again while the store is unreachable (the test's own connections die with
    the server too)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_runs_that_end_while_the_database_is_down_are_not_run_again(
    tmp_path: Path,
) -> None:
    log = tmp_path / "completions.log"
    with ThrowawayPostgres() as pg:
        async with Corral(pg.dsn) as app:
            ids = await app.submit_many(
                [{"agent": "work", "input": {"i": i, "sleep": 0.4}} for i in range(40)]
            )
            worker = WorkerProcess(pg.dsn, log, concurrency=8, ttl=30.0)
            try:
                deadline = time.monotonic() + 60
                while len(completions(log)) < 8:  # the first 8 ran; the next 8 are leased
                    assert time.monotonic() < deadline, worker.stderr()
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
                pg.crash()  # the 8 in flight end while it is down: their acks must wait
                # callers get StoreUnavailable, and soon: the first on its dead connection,
                # the next once no connection came free in the pool's wait
                began = time.monotonic()
                for _ in range(2):
                    with pytest.raises(StoreUnavailable):
                        await app.stats()
                assert time.monotonic() - began < POOL_WAIT + 5
                pg.start()

                async def all_ended() -> bool:
                    stats = await app.stats()
                    return stats.queued == 0 and stats.in_flight == 0

                while not await _once_reachable(all_ended):
                    assert time.monotonic() < deadline + 60, worker.stderr()
                    await asyncio.sleep(0.2)
                assert worker.proc.poll() is None, worker.stderr()  # it rode the restart out
            finally:
                worker.stop()
            runs = [await _once_reachable(lambda r=r: app.get(r)) for r in ids]
    assert Counter(run.status for run in runs) == {RunStatus.SUCCEEDED: len(ids)}
    executions = Counter(run_id for run_id, _epoch, _pid in completions(log))
    assert {r: n for r, n in executions.items() if n > 1} == {}, "runs executed twice"
    assert set(executions) == set(ids)
    # the crash did catch acks on their way: they were held and written after the restart
    assert "acks failed, retrying" in worker.stderr()


async def test_the_store_is_back_within_seconds_of_the_server_after_a_long_outage() -> None:
    """The pools keep trying about once a second while the server is away, so the first call
    after it returns succeeds at once (psycopg_pool's own backoff doubles without a bound:
    after 8 s down, its next attempt came ~7 s after the server was back, and after 30 s
    down, ~20 s: calls failed with StoreUnavailable all that time)."""
    with ThrowawayPostgres() as pg:
        async with Corral(pg.dsn) as app:
            await app.stats()
            pg.crash()
            with pytest.raises(StoreUnavailable):
                await app.stats()  # a dead connection: the pools start reconnecting
            await asyncio.sleep(8)
            pg.start()
            began = time.monotonic()
            stats = await app.stats()
            assert time.monotonic() - began < 2.5
            assert stats.queued == 0
