"""Runs reach shared resources through their context: agent id from the run, usage charged
to the run tree's budget."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import Corral, RunContext
from corral.models import RunStatus

pytestmark = pytest.mark.timeout(60)


async def test_runs_share_a_resource_and_pay_for_what_they_used(db_url: str) -> None:
    app = Corral(db_url)
    llm = app.shared_resource("llm", capacity=1, tpm=10_000)
    inside = 0
    most = 0

    @app.agent("ask")
    async def ask(ctx: RunContext, question: str) -> str:
        nonlocal inside, most
        async with ctx.acquire("llm", tokens=200) as handle:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1
            handle.report_usage(120)
        return question.upper()

    @app.agent("confused")
    async def confused(ctx: RunContext, input: Any) -> None:
        async with ctx.acquire("gpu"):
            pass

    async with app:
        ids = [await app.submit("ask", f"q{i}", budget=1000) for i in range(6)]
        bad = await app.submit("confused", max_attempts=1)
        worker = app.worker(concurrency=6, poll_interval=0.02)
        await asyncio.wait_for(worker.run(until_idle=True), 45)
        runs = [await app.get(i) for i in ids]
        failed = await app.get(bad)
        snapshot = await llm.snapshot()
        stats = llm.statistics()
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * 6
    assert all(r.spent == 120 for r in runs)
    assert most == 1  # capacity 1: one call at a time across the six runs
    assert snapshot.holders == 0 and snapshot.tokens_in_window == 6 * 120
    assert (stats.grants, stats.holders, stats.waiters) == (6, 0, 0)
    assert (
        failed.status == RunStatus.FAILED
        and "no shared resource named 'gpu'" in (failed.error["message"])
    )


async def test_a_request_larger_than_the_token_window_is_refused_at_once(db_url: str) -> None:
    """It could never be granted, and at the head of the queue it would block every other
    request of every process behind it."""
    from corral import InvalidInput

    app = Corral(db_url)
    llm = app.shared_resource("llm", capacity=4, tpm=1_000)
    async with app:
        with pytest.raises(InvalidInput, match="can never fit llm's 1,000 per minute"):
            await asyncio.wait_for(llm.acquire_start("big", tokens=1_001), 5)
        async with llm.acquire("small", tokens=10, timeout=5):
            pass
        assert (await llm.snapshot()).tokens_in_window == 10
