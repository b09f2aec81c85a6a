"""Group commit of submits: concurrent submits share transactions, and each submit still gets
its own run id or its own error (on both backends)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import Corral
from corral.api.batching import SubmitBatcher
from corral.errors import BackpressureError, UnknownAgent


async def test_concurrent_submits_share_transactions(corral_app: Corral) -> None:
    batcher = SubmitBatcher(corral_app)
    ids = await asyncio.gather(
        *[batcher.submit({"agent": "echo", "input": i, "tenant": "acme"}) for i in range(50)]
    )
    assert len(set(ids)) == 50
    assert batcher.batched_runs == 50 and batcher.batches < 50
    for i, run_id in enumerate(ids):  # each id is the run of its own submit
        assert (await corral_app.get(run_id)).input == i


async def test_a_refused_submit_fails_alone(corral_app: Corral) -> None:
    await corral_app.set_tenant("full", max_queued=1)
    batcher = SubmitBatcher(corral_app)
    specs = [
        {"agent": "echo", "input": 1, "tenant": "acme"},
        {"agent": "nobody", "tenant": "acme"},
        {"agent": "echo", "input": 2, "tenant": "full"},
        {"agent": "echo", "input": 3, "tenant": "full"},
        {"agent": "echo", "input": 4, "tenant": "acme", "idempotency_key": "k"},
        {"agent": "echo", "input": 4, "tenant": "acme", "idempotency_key": "k"},
    ]
    results = await asyncio.gather(*[batcher.submit(s) for s in specs], return_exceptions=True)
    assert isinstance(results[1], UnknownAgent)
    full = [r for r in results[2:4] if isinstance(r, BackpressureError)]
    assert len(full) == 1  # the quota of one queued run admits exactly one of the two
    accepted = [r for r in results if isinstance(r, str)]
    assert len(accepted) == 4
    assert results[4] == results[5]  # same idempotency key, same run
    assert (await corral_app.get(str(results[0]))).input == 1


async def test_a_lone_submit_is_a_batch_of_one(corral_app: Corral) -> None:
    batcher = SubmitBatcher(corral_app)
    await batcher.submit({"agent": "echo", "tenant": "acme"})
    assert (batcher.batches, batcher.batched_runs) == (1, 1)


async def test_an_unforeseen_error_fails_its_batch_and_the_next_batch_still_goes(
    corral_app: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = corral_app.submit_many
    calls = 0

    async def first_batch_breaks(items: Any) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)  # the next submits queue up behind it meanwhile
            raise RuntimeError("nobody foresaw this")
        return await real(items)

    monkeypatch.setattr(corral_app, "submit_many", first_batch_breaks)
    batcher = SubmitBatcher(corral_app)
    first = [asyncio.create_task(batcher.submit({"agent": "echo", "input": i})) for i in range(2)]
    await asyncio.sleep(0.01)
    behind = [
        asyncio.create_task(batcher.submit({"agent": "echo", "input": i})) for i in range(2, 5)
    ]
    results = await asyncio.wait_for(asyncio.gather(*first, *behind, return_exceptions=True), 10)
    assert all(isinstance(r, RuntimeError) for r in results[:2]), results
    assert all(isinstance(r, str) for r in results[2:]), results
