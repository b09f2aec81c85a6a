"""What an agent returns is checked per run: a result the store cannot keep (not JSON, nested
too deep) fails that run alone, at once and with the reason, never the acks of the runs that
ended beside it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import Corral, RunContext
from corral.models import RunStatus
from tests.support.inprocess import work_until_ended

pytestmark = pytest.mark.timeout(60)


async def test_a_result_that_is_not_json_fails_its_run_alone(db_url: str) -> None:
    app = Corral(db_url, lease_ttl=2.0)
    finish = asyncio.Event()
    all_started = asyncio.Event()
    executions: list[str] = []

    def started(run_id: str) -> None:
        executions.append(run_id)
        if len(executions) == 8:
            all_started.set()

    @app.agent("ok")
    async def ok(ctx: RunContext, input: Any) -> int:
        started(ctx.run_id)
        await finish.wait()
        return 1

    @app.agent("bad")
    async def bad(ctx: RunContext, input: Any) -> Any:
        started(ctx.run_id)
        await finish.wait()
        return {"when": {1, 2}}  # a set: no JSON for it

    @app.agent("deep")
    async def deep(ctx: RunContext, input: Any) -> Any:
        started(ctx.run_id)
        await finish.wait()
        value: Any = None
        for _ in range(300):
            value = [value]
        return value

    async with app:
        good = await app.submit_many([{"agent": "ok", "tenant": f"t{i}"} for i in range(6)])
        bad_id = await app.submit("bad", tenant="other")
        deep_id = await app.submit("deep", tenant="other")
        worker = app.worker(concurrency=10, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(all_started.wait(), 10)
            finish.set()  # all end together: their acks go out in one batch
            for run_id in good:
                run = await app.wait(run_id, timeout=10)
                assert run.status is RunStatus.SUCCEEDED and run.attempts == 1
            failed = await app.wait(bad_id, timeout=10)
            too_deep = await app.wait(deep_id, timeout=10)
        finally:
            worker.stop()
            await running
    assert failed.status is RunStatus.FAILED and failed.attempts == 1  # not retried
    assert "the agent's result is not a JSON value" in failed.error["message"]
    assert too_deep.status is RunStatus.FAILED
    assert "nests deeper than 100 levels" in too_deep.error["message"]
    assert sorted(executions) == sorted([*good, bad_id, deep_id])  # each ran once


async def test_an_ack_the_store_refuses_does_not_sink_its_batch(db_url: str) -> None:
    """The batcher's own guard, for acks that reach it unchecked."""
    from corral.models import Ack, RunSpec
    from corral.store import create_store
    from corral.worker.acker import AckBatcher

    store = create_store(db_url)
    await store.open()
    try:
        await store.submit([RunSpec("a") for _ in range(3)])
        first, second, third = await store.lease("w", 30.0, 3)
        acker = AckBatcher(store)
        acker.ack(Ack(first.run_id, first.epoch, 1))
        acker.ack(Ack(second.run_id, second.epoch, {1, 2}))  # type: ignore[arg-type]
        acker.ack(Ack(third.run_id, third.epoch, 3))
        acker.start()
        await acker.close()
        runs = [await store.get(lease.run_id) for lease in (first, second, third)]
        assert [r.status if r else None for r in runs] == [
            RunStatus.SUCCEEDED,
            RunStatus.RUNNING,  # its lease expires and it is delivered again
            RunStatus.SUCCEEDED,
        ]
    finally:
        await store.close()


async def test_a_cancelled_error_the_agent_raises_itself_is_a_failure(db_url: str) -> None:
    """Only a cancellation by the worker (drain, cancel, a lost lease) gives a run back; a
    CancelledError the agent lets out is a failure, retried and then dead-lettered."""
    app = Corral(db_url)
    calls: list[int] = []

    @app.agent("leaky")
    async def leaky(ctx: RunContext, input: Any) -> None:
        calls.append(ctx.attempt)
        helper = asyncio.create_task(asyncio.sleep(10))
        helper.cancel()
        await helper  # raises the helper's CancelledError into the agent

    async with app:
        run_id = await app.submit("leaky", max_attempts=2)
        run = await work_until_ended(app, run_id, timeout=10, concurrency=1, retry_base=0)
    assert run.status is RunStatus.FAILED
    assert run.attempts == 2 and calls == [1, 2]
    assert run.error["type"] == "CancelledError"
