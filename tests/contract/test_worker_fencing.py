"""A worker's own zombie: when a worker's lease on a run expires under it (its event loop held
up past the TTL, so no heartbeat went out) and the store hands the run back to that same
worker, the earlier execution must stop, not run on beside the new one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from corral import Corral, RunContext
from corral.clock import FakeClock
from corral.models import RunStatus
from tests.support.inprocess import work_until_ended

pytestmark = pytest.mark.timeout(60)

TTL = 30.0


async def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_run_leased_again_by_its_own_worker_stops_the_earlier_execution(
    db_url: str, clock: FakeClock
) -> None:
    app = Corral(db_url, clock=clock, lease_ttl=TTL)
    started: list[int] = []
    stopped: list[int] = []
    finish = asyncio.Event()

    @app.agent("slow")
    async def slow(ctx: RunContext, input: object) -> int:
        started.append(ctx.attempt)
        try:
            if ctx.attempt == 1:
                await asyncio.Event().wait()  # held until the worker stops it
            await finish.wait()
        except asyncio.CancelledError:
            stopped.append(ctx.attempt)
            raise
        return ctx.attempt

    async with app:
        run_id = await app.submit("slow", {})
        worker = app.worker(concurrency=2, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        try:
            await _until(lambda: started == [1], "the first delivery")
            # The lease runs out without a heartbeat (the worker beats every TTL/3 of real
            # time); the worker's next lease reaps it and takes the run again itself.
            clock.advance(TTL + 1)
            await _until(lambda: started == [1, 2], "the second delivery")
            await _until(lambda: stopped == [1], "the earlier execution to stop")
            await _until(lambda: worker.in_flight == 1, "the earlier execution's slot")
            finish.set()
            await _until(lambda: worker.in_flight == 0, "the second delivery to end")
            # the ack goes out after the slot frees (with the worker's next lease)
            run = await app.wait(run_id, timeout=10)
            assert run.status is RunStatus.SUCCEEDED
            assert run.result == 2
            assert run.attempts == 2
            assert stopped == [1]
        finally:
            worker.stop()
            await running


async def test_the_heartbeat_outlives_an_unexpected_error(db_url: str) -> None:
    """One heartbeat that fails for a reason nobody foresaw must not end the heartbeats:
    every run longer than the TTL would then lose its lease and run again."""
    from typing import Any

    from corral.models import HeartbeatReport, LeaseRef
    from corral.store import Store, create_store

    class FirstBeatFails:
        """The real store, whose first heartbeat raises something unexpected."""

        def __init__(self, store: Store) -> None:
            self._store = store
            self.beats = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(self._store, name)

        async def heartbeat_many(self, refs: list[LeaseRef], ttl: float) -> HeartbeatReport:
            self.beats += 1
            if self.beats == 1:
                raise RuntimeError("something nobody foresaw")
            return await self._store.heartbeat_many(refs, ttl)

    real = create_store(db_url)
    store = FirstBeatFails(real)
    app = Corral(db_url, store=store, lease_ttl=0.6)  # type: ignore[arg-type]

    @app.agent("long")
    async def long(ctx: RunContext, input: object) -> int:
        await asyncio.sleep(1.5)  # over twice the TTL: needs the later heartbeats
        return ctx.attempt

    async with app:
        run_id = await app.submit("long")
        run = await work_until_ended(app, run_id, timeout=20, concurrency=1)
    assert store.beats >= 3
    assert run.status is RunStatus.SUCCEEDED
    assert (run.attempts, run.result) == (1, 1)


async def test_a_run_whose_agent_this_worker_lacks_waits_for_one_that_has_it(
    db_url: str, clock: FakeClock
) -> None:
    """A rolling deploy that adds an agent: an old worker that leases a run of the new agent
    must not dead-letter it; the run is offered again later, to the new workers."""
    old = Corral(db_url, clock=clock)
    new = Corral(db_url, clock=clock)

    @old.agent("a")
    @new.agent("a")
    async def a(ctx: RunContext, input: object) -> str:
        return "a"

    @new.agent("b")
    async def b(ctx: RunContext, input: object) -> str:
        return "b"

    async with old, new:
        run_id = await new.submit("b")
        old_worker = old.worker(concurrency=1, poll_interval=0.05)
        running = asyncio.create_task(old_worker.run())
        try:
            run = await new.get(run_id)
            for _ in range(500):  # until the old worker has given up on it
                if run.error is not None:
                    break
                await asyncio.sleep(0.02)
                run = await new.get(run_id)
        finally:
            old_worker.stop()
            await running
        assert run.status is RunStatus.QUEUED  # not dead-lettered
        assert "no agent named 'b'" in (run.error or {}).get("message", "")
        assert run.available_at >= clock.now + 29  # not offered again at once
        clock.advance(31)
        done = await work_until_ended(new, run_id, timeout=10, concurrency=1)
    assert done.status is RunStatus.SUCCEEDED and done.result == "b"
    assert done.attempts == 2


async def test_runs_leased_to_a_worker_that_never_started_them_go_back_when_it_stops(
    db_url: str, clock: FakeClock
) -> None:
    """A lease call abandoned after its commit (the worker torn down while the call ran)
    leaves runs leased to a worker that never heard of them. The worker gives them back
    when it stops, with no attempt counted, instead of leaving them to wait out the lease TTL
    (on this fake clock the TTL never runs out: only the give-back frees them)."""
    app = Corral(db_url, clock=clock, lease_ttl=TTL)

    @app.agent("echo")
    async def echo(ctx: RunContext, input: object) -> object:
        return input

    async with app:
        worker = app.worker(concurrency=2, poll_interval=0.05)
        run_id = await app.submit("echo", {"n": 1})
        # what the abandoned call committed: the run leased under this worker's id
        (orphan,) = await app.store.lease(worker.worker_id, TTL, 1)
        assert orphan.run_id == run_id
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.2)
        assert (await app.get(run_id)).status is RunStatus.RUNNING  # type: ignore[union-attr]
        worker.stop()
        await running
        run = await app.get(run_id)
        assert run is not None
        assert run.status is RunStatus.QUEUED
        assert run.attempts == 0
        assert await app.store.leased_to(worker.worker_id) == []
        # another worker takes it now, not after the TTL
        done = await work_until_ended(app, run_id, timeout=10)
        assert done.status is RunStatus.SUCCEEDED
        assert done.result == {"n": 1}
        assert done.attempts == 1


async def test_two_workers_given_the_same_worker_id_never_share_leases(
    db_url: str, clock: FakeClock
) -> None:
    """A name reused by mistake (every replica configured with worker_id="worker-1") must not
    let one worker act on the other's runs: the stopping one gives back only what it leased,
    so the run the other is executing stays its own and its ack is the one that lands."""
    app = Corral(db_url, clock=clock, lease_ttl=TTL)
    started: list[str] = []
    finish = asyncio.Event()

    @app.agent("slow")
    async def slow(ctx: RunContext, input: object) -> str:
        started.append(ctx.run_id)
        await finish.wait()
        return "done"

    async with app:
        busy = app.worker(concurrency=1, poll_interval=0.05, worker_id="worker-1")
        idle = app.worker(concurrency=1, poll_interval=0.05, worker_id="worker-1")
        assert busy.worker_id != idle.worker_id
        assert busy.worker_id.startswith("worker-1")
        run_id = await app.submit("slow", {})
        busy_task = asyncio.create_task(busy.run())
        try:
            await _until(lambda: started == [run_id], "the busy worker to start the run")
            before = await app.get(run_id)
            assert before is not None and before.status is RunStatus.RUNNING
            idle_task = asyncio.create_task(idle.run())
            await asyncio.sleep(0.2)
            idle.stop()
            await idle_task
            during = await app.get(run_id)
            assert during is not None
            assert during.status is RunStatus.RUNNING
            assert during.lease_owner == busy.worker_id
            finish.set()
            await _until(lambda: busy.completed == 1, "the busy worker's ack")
        finally:
            finish.set()
            busy.stop()
            await busy_task
        run = await app.get(run_id)
        assert run is not None
        assert run.status is RunStatus.SUCCEEDED
        assert run.attempts == 1
        assert started == [run_id]
