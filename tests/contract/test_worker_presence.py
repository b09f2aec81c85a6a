"""Workers report themselves to the store (``Corral.workers``): each running worker's slots,
busy slots, runs completed and agents stuck past their stop, renewed every third of its lease
TTL; a draining worker says so at once; a worker that stops removes its report; one that goes
silent reads as lost after a lease TTL, and its report is deleted an hour later.
(A SIGKILLed worker process: tests/integration/test_crash_fencing_drain.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import pytest

from corral import Corral, RunContext, WorkerPresence, WorkerState
from corral.clock import FakeClock
from corral.store import Store
from corral.store.sql_workers import FORGET_SILENT_AFTER
from tests.support.polling import until

pytestmark = pytest.mark.timeout(60)

TTL = 0.6  # a report every 0.2 s


async def test_a_worker_reports_its_slots_and_work_and_removes_its_report_when_it_stops(
    db_url: str,
) -> None:
    app = Corral(db_url)
    release = asyncio.Event()

    @app.agent("hold")
    async def hold(ctx: RunContext, input: Any) -> str:
        await release.wait()
        return "done"

    async with app:
        assert await app.workers() == []
        worker = app.worker(
            concurrency=3, express_slots=1, lease_ttl=TTL, drain_timeout=10, poll_interval=0.05
        )
        running = asyncio.create_task(worker.run())
        try:
            [seen] = await until(app.workers, lambda ws: len(ws) == 1, seconds=10)
            assert (seen.worker_id, seen.host, seen.pid) == (
                worker.worker_id,
                socket.gethostname(),
                os.getpid(),
            )
            assert (seen.concurrency, seen.express_slots, seen.slots) == (3, 1, 4)
            assert (seen.busy, seen.stuck, seen.completed) == (0, 0, 0)
            assert seen.agents == ("hold",)
            assert seen.state(time.time()) == WorkerState.RUNNING
            await app.submit_many([{"agent": "hold"} for _ in range(2)])
            await until(app.workers, lambda ws: ws[0].busy == 2, seconds=10)
            worker.stop()  # drains: the two runs hold it
            [draining] = await until(app.workers, lambda ws: ws[0].draining, seconds=10)
            assert draining.state(time.time()) == WorkerState.DRAINING
            assert draining.busy == 2 and draining.started_at == seen.started_at
            release.set()
            await asyncio.wait_for(running, 20)
        finally:
            release.set()
            worker.stop()
            await asyncio.wait_for(running, 20)
        assert worker.completed == 2
        assert await app.workers() == []


async def test_a_stuck_agent_shows_at_once(db_url: str) -> None:
    app = Corral(db_url)
    started, let_go = asyncio.Event(), asyncio.Event()

    @app.agent("stubborn")
    async def stubborn(ctx: RunContext, input: Any) -> str:
        started.set()
        while not let_go.is_set():
            # swallowed: the worker gives up on it after the grace
            with contextlib.suppress(asyncio.CancelledError):
                await let_go.wait()
        return "late"

    async with app:
        run_id = await app.submit("stubborn")
        # a lease TTL long enough that only the give-up itself can report it in time
        worker = app.worker(concurrency=1, lease_ttl=30, stop_grace=0.2, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(started.wait(), 10)
            await app.cancel(run_id)
            assert (await app.wait(run_id, timeout=20)).status == "cancelled"
            [seen] = await until(app.workers, lambda ws: ws[0].stuck == 1, seconds=5)
            assert seen.busy == 1  # its slot stays taken
        finally:
            let_go.set()
            worker.stop()
            await asyncio.wait_for(running, 20)


def report(worker_id: str, seen_at: float, **fields: Any) -> WorkerPresence:
    return WorkerPresence(
        **{
            "worker_id": worker_id,
            "host": "h1",
            "pid": 7,
            "started_at": 900.0,
            "seen_at": seen_at,
            "lease_ttl": 30.0,
            "concurrency": 8,
            "express_slots": 0,
            "busy": 3,
            "stuck": 0,
            "completed": 10,
            **fields,
        }
    )


async def test_a_silent_worker_reads_as_lost_and_is_forgotten_after_an_hour(
    store: Store, clock: FakeClock
) -> None:
    clock.now = 1010.0  # the reader's clock, near the reports'
    await store.report_worker(report("a", 1000.0))
    await store.report_worker(report("b", 1000.0, host="h0", draining=True))
    # renewed: the same row, its figures moved on
    await store.report_worker(report("a", 1010.0, busy=5, completed=12, stuck=1))
    b, a = await store.workers()  # by host
    assert (a.worker_id, a.seen_at, a.busy, a.completed, a.stuck) == ("a", 1010.0, 5, 12, 1)
    assert (b.worker_id, b.draining) == ("b", True)
    assert a.state(1040.0) == WorkerState.RUNNING
    assert a.state(1040.5) == WorkerState.LOST  # a lease TTL without a report
    assert b.state(1020.0) == WorkerState.DRAINING
    # an hour of silence: the next report of any worker deletes the row
    await store.report_worker(report("a", 1000.0 + FORGET_SILENT_AFTER + 1))
    assert [w.worker_id for w in await store.workers()] == ["a"]
    await store.remove_worker("a")
    assert await store.workers() == []


async def test_a_worker_silent_for_an_hour_is_not_listed_when_no_worker_reports(
    store: Store, clock: FakeClock
) -> None:
    """Killed with no worker left to report (a deployment scaled to nothing, a crash of
    every machine), a worker's row is not deleted; it is shown as lost for an hour all the
    same, not for ever."""
    clock.now = 1000.0
    await store.report_worker(report("a", 1000.0))
    await store.report_worker(report("b", 1000.0 + FORGET_SILENT_AFTER / 2))
    clock.now = 1000.0 + FORGET_SILENT_AFTER + 1
    [b] = await store.workers()
    assert b.worker_id == "b" and b.state(clock.now) == WorkerState.LOST
