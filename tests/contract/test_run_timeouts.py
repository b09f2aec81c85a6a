"""A run's own ``timeout`` (given at submit, or to ``ctx.spawn``) bounds each of its attempts
in place of its agent's timeout and the worker's default: it is stored with the run and comes
with every lease of it, however the lease is made."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

import pytest

from corral import Corral, InvalidInput, RunContext
from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.models import Ack, RunSpec, RunStatus
from corral.store import Store, create_store
from tests.support.inprocess import work_until_all_ended, work_until_ended

pytestmark = pytest.mark.timeout(60)

TTL = 30.0


@pytest.mark.parametrize("fairness", ["tenant", "fifo"])
async def test_every_lease_of_a_run_carries_its_timeout(
    db_url: str, clock: FakeClock, fairness: Literal["tenant", "fifo"]
) -> None:
    store = create_store(db_url, StoreConfig(fairness=fairness), clock)
    await store.open()
    try:
        await _leases_carry_timeouts(store)
    finally:
        await store.close()


async def _leases_carry_timeouts(store: Store) -> None:
    ids = await store.submit(
        [
            RunSpec("a", tenant="t", timeout=1.5),
            RunSpec("b", tenant="t"),
            RunSpec("c", tenant="t", timeout=2.5),
            RunSpec("d", tenant="t", timeout=4.0),
        ]
    )
    first = await store.lease("w", TTL, 1)  # the first lease of a store: maintenance, in steps
    second = await store.lease("w", TTL, 1)  # then the one-statement lease (PostgreSQL)
    carried = await store.ack_and_lease([Ack(first[0].run_id, first[0].epoch, None)], "w", TTL, 1)
    many = await store.lease("w", TTL, 5)
    leases = [*first, *second, *carried.leases, *many]
    assert [lease.run_id for lease in leases] == ids
    assert [lease.timeout for lease in leases] == [1.5, None, 2.5, 4.0]
    stored = [await store.get(run_id) for run_id in ids]
    assert [run.timeout if run else "missing" for run in stored] == [1.5, None, 2.5, 4.0]


async def test_a_runs_timeout_stops_an_agent_without_one_on_every_attempt(db_url: str) -> None:
    app = Corral(db_url)
    stopped: list[int] = []

    @app.agent("hangs")
    async def hangs(ctx: RunContext, input: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(ctx.attempt)
            raise

    async with app:
        run_id = await app.submit("hangs", timeout=0.2, max_attempts=2)
        run = await work_until_ended(app, run_id, timeout=20, concurrency=1, retry_base=0)
    assert run.status is RunStatus.FAILED and run.attempts == 2
    assert stopped == [1, 2]
    assert run.timeout == 0.2
    assert run.error["type"] == "AgentTimeout"
    assert run.error["message"] == "agent 'hangs' ran past its timeout of 0.2 s"


async def test_a_runs_timeout_wins_over_its_agents_and_the_workers(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("bounded", timeout=0.1)
    async def bounded(ctx: RunContext, input: Any) -> str:
        await asyncio.sleep(input)
        return "done"

    async with app:
        # longer than the agent's own limit (and the worker's default): it may run to its end
        longer = await app.submit("bounded", 0.4, timeout=10, max_attempts=1)
        # shorter than the worker's default: stopped at its own
        shorter = await app.submit("bounded", 30, timeout=0.3, max_attempts=1)
        ran, stopped = await work_until_all_ended(
            app, [longer, shorter], timeout=20, concurrency=2, agent_timeout=20
        )
    assert ran.status is RunStatus.SUCCEEDED and ran.result == "done"
    assert stopped.status is RunStatus.FAILED
    assert stopped.error["message"] == "agent 'bounded' ran past its timeout of 0.3 s"


async def test_a_run_submitted_to_a_waiting_worker_keeps_its_timeout(db_url: str) -> None:
    """On PostgreSQL a run submitted while a worker waits is handed over already leased
    (test_handoff.py): its timeout travels in that notification."""
    app = Corral(db_url)
    started = asyncio.Event()

    @app.agent("hangs")
    async def hangs(ctx: RunContext, input: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    async with app:
        await app.set_tenant("acme")  # a tenant's very first run is never handed
        worker = app.worker(concurrency=2, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.3)  # the worker waits, its slots on offer
            run_id = await app.submit("hangs", tenant="acme", timeout=0.2, max_attempts=1)
            run = await app.wait(run_id, timeout=20)
        finally:
            worker.stop()
            await running
        handoffs = (await app.store.delivery_counters()).handoffs
    assert handoffs == (1 if db_url.startswith("postgresql") else 0)
    assert started.is_set()
    assert run.status is RunStatus.FAILED
    assert run.error["message"] == "agent 'hangs' ran past its timeout of 0.2 s"


async def test_a_childs_timeout_bounds_the_child(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> None:
        await asyncio.sleep(30)

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> str:
        child_id = await ctx.spawn("child", timeout=0.2, max_attempts=1)
        try:
            await ctx.wait(child_id)
        except Exception as exc:  # the child's failure, delivered to its parent
            return f"{type(exc).__name__}: {child_id}"
        return "the child ended well"

    async with app:
        run_id = await app.submit("parent")
        run = await work_until_ended(app, run_id, timeout=30, concurrency=2, retry_base=0)
        child_id = run.result.rsplit(" ", 1)[1]
        child_run = await app.get(child_id)
    assert run.status is RunStatus.SUCCEEDED
    assert run.result.startswith("ChildRunFailed")
    assert child_run.timeout == 0.2 and child_run.status is RunStatus.FAILED
    assert child_run.error["type"] == "AgentTimeout"


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "5", True])
async def test_a_run_timeout_that_is_not_a_positive_number_is_refused(
    db_url: str, bad: object
) -> None:
    async with Corral(db_url) as app:
        with pytest.raises(InvalidInput, match="timeout"):
            await app.submit("echo", timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="item 1: timeout"):
            await app.submit_many([{"agent": "echo"}, {"agent": "echo", "timeout": bad}])
        assert (await app.stats()).queued == 0  # nothing of a refused batch was kept
