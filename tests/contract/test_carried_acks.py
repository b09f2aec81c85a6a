"""A worker sends the acks of runs that ended while every slot was busy with the lease of the
slots they freed (``Store.ack_and_lease``: on PostgreSQL one statement and one commit), a few
at a time; many at once go to the ack batcher, beside the lease. No ack is left behind when
the worker stops before that lease."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from corral import Corral, RunContext
from corral.models import Ack
from corral.store import Store
from corral.worker.worker import CARRY_MAX, Worker

pytestmark = pytest.mark.timeout(60)


def count_ack_calls(store: Store, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Acks written through each of the store's two verbs."""
    acks: Counter[str] = Counter()
    ack_many, ack_and_lease = store.ack_many, store.ack_and_lease

    async def counting_ack_many(batch: list[Ack]) -> frozenset[str]:
        acks["ack_many"] += len(batch)
        return await ack_many(batch)

    async def counting_ack_and_lease(batch: list[Ack], *args: Any, **kw: Any) -> Any:
        acks["ack_and_lease"] += len(batch)
        return await ack_and_lease(batch, *args, **kw)

    monkeypatch.setattr(store, "ack_many", counting_ack_many)
    monkeypatch.setattr(store, "ack_and_lease", counting_ack_and_lease)
    return acks


async def test_at_concurrency_one_each_ack_goes_with_the_next_lease(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Corral(db_url, lease_ttl=10.0)

    @app.agent("noop")
    async def noop(ctx: RunContext, input: Any) -> Any:
        return input

    async with app:
        ids = await app.submit_many([{"agent": "noop", "input": i} for i in range(40)])
        acks = count_ack_calls(app.store, monkeypatch)
        worker = app.worker(concurrency=1, poll_interval=0.05)
        await asyncio.wait_for(worker.run(until_idle=True), 30)
        runs = [await app.get(run_id) for run_id in ids]
        assert [(r.status, r.result) for r in runs] == [("succeeded", i) for i in range(40)]
        # every ack went out with a lease (the last with one that found nothing)
        assert acks["ack_and_lease"] == 40


async def test_many_acks_at_once_go_beside_the_lease(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Corral(db_url, lease_ttl=10.0)
    gate = asyncio.Event()
    all_started = asyncio.Event()
    started: list[str] = []
    concurrency = CARRY_MAX + 4

    @app.agent("gated")
    async def gated(ctx: RunContext, input: Any) -> Any:
        started.append(ctx.run_id)
        if len(started) == concurrency:
            all_started.set()
        await gate.wait()
        return None

    async with app:
        ids = await app.submit_many([{"agent": "gated"} for _ in range(2 * concurrency)])
        acks = count_ack_calls(app.store, monkeypatch)
        worker = app.worker(concurrency=concurrency, poll_interval=0.05)
        running = asyncio.create_task(worker.run(until_idle=True))
        await asyncio.wait_for(all_started.wait(), 10)
        gate.set()  # every slot's run ends at once
        await asyncio.wait_for(running, 30)
        assert {(await app.get(run_id)).status for run_id in ids} == {"succeeded"}
        assert acks["ack_and_lease"] == 0 and acks["ack_many"] == 2 * concurrency


async def test_a_run_that_ends_as_its_worker_stops_is_acked(db_url: str) -> None:
    """The ack is held for the lease of the slot it frees; the worker stops instead of leasing,
    and the ack is written all the same."""
    app = Corral(db_url, lease_ttl=10.0)
    workers: list[Worker] = []

    @app.agent("last")
    async def last(ctx: RunContext, input: Any) -> Any:
        workers[0].stop()
        return "done"

    async with app:
        run_id = await app.submit("last")
        workers.append(app.worker(concurrency=1, poll_interval=0.05))
        await asyncio.wait_for(workers[0].run(), 30)
        run = await app.get(run_id)
        assert (run.status, run.result) == ("succeeded", "done")
