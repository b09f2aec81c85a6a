"""Retrying a dead-lettered run: ``app.retry`` queues a failed root run again with fresh
attempts; its journal stays, so what already succeeded is replayed, not redone. Any other run
is refused by name, and the tenant's queued quota holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import BackpressureError, Corral, InvalidInput, RunContext, RunNotFound
from corral.errors import RunNotRetryable
from corral.models import RunStatus
from tests.support.inprocess import work_until_ended

pytestmark = pytest.mark.timeout(60)


async def test_a_failed_run_retried_replays_its_journal_and_succeeds(db_url: str) -> None:
    app = Corral(db_url)
    fetched: list[int] = []
    broken = True

    async def fetch() -> str:
        fetched.append(1)
        return "page"

    @app.agent("flaky")
    async def flaky(ctx: RunContext, input: Any) -> str:
        page = await ctx.step("fetch", fetch)
        if broken:
            raise RuntimeError("the bug")
        return f"{page} done on attempt {ctx.attempt}"

    async with app:
        run_id = await app.submit("flaky", tenant="acme", max_attempts=2)
        failed = await work_until_ended(app, run_id, timeout=20, concurrency=1, retry_base=0)
        assert failed.status is RunStatus.FAILED and failed.attempts == 2
        failed_before = (await app.stats()).tenant("acme").failed  # type: ignore[union-attr]

        broken = False  # the fix is deployed
        queued = await app.retry(run_id)
        assert queued.status is RunStatus.QUEUED
        assert queued.attempts == 2 and queued.finished_at is None
        stats = await app.stats()
        acme = stats.tenant("acme")
        assert acme is not None and acme.queued == 1
        assert acme.failed == failed_before  # ended counters never go down

        run = await work_until_ended(app, run_id, timeout=20, concurrency=1, retry_base=0)
        kinds = [e.kind for e in await app.store.journal(run_id)]
    assert run.status is RunStatus.SUCCEEDED
    assert run.result == "page done on attempt 3"
    assert run.attempts == 3
    assert fetched == [1]  # the step that succeeded before is replayed, not run again
    assert kinds.count("retried") == 1
    assert kinds.count("attempt_failed") == 2  # the two attempts that raised
    assert run.error is None  # the error is what ended a run; this one succeeded


async def test_a_retried_run_gets_the_attempts_asked_for(db_url: str) -> None:
    app = Corral(db_url)
    seen: list[int] = []

    @app.agent("always_fails")
    async def always_fails(ctx: RunContext, input: Any) -> None:
        seen.append(ctx.attempt)
        raise RuntimeError("still broken")

    async with app:
        run_id = await app.submit("always_fails", max_attempts=1)
        await work_until_ended(app, run_id, timeout=20, concurrency=1, retry_base=0)
        await app.retry(run_id, attempts=2)
        run = await work_until_ended(app, run_id, timeout=20, concurrency=1, retry_base=0)
    assert run.status is RunStatus.FAILED
    assert seen == [1, 2, 3]
    assert run.attempts == 3
    assert run.error["message"] == "still broken"


async def test_only_a_failed_root_run_can_be_retried(db_url: str) -> None:
    app = Corral(db_url)
    release = asyncio.Event()

    @app.agent("ok")
    async def ok(ctx: RunContext, input: Any) -> int:
        return 1

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> Any:
        (kid,) = await ctx.spawn_many([{"agent": "child"}])
        return await ctx.wait(kid)

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> None:
        await release.wait()
        raise RuntimeError("child broke")

    async with app:
        queued_id = await app.submit("ok")
        with pytest.raises(RunNotRetryable, match="it is queued, not failed"):
            await app.retry(queued_id)
        done = await work_until_ended(app, queued_id, timeout=20, concurrency=2)
        assert done.status is RunStatus.SUCCEEDED
        with pytest.raises(RunNotRetryable, match="it is succeeded, not failed"):
            await app.retry(queued_id)

        parent_id = await app.submit("parent", max_attempts=1)
        release.set()
        await work_until_ended(app, parent_id, timeout=20, concurrency=2, retry_base=0)
        (kid,) = await app.store.children(parent_id)
        assert kid.status is RunStatus.FAILED
        with pytest.raises(RunNotRetryable, match=f"retry its root {parent_id}"):
            await app.retry(kid.id)
        assert (await app.get(kid.id)).status is RunStatus.FAILED  # type: ignore[union-attr]

        with pytest.raises(RunNotFound):
            await app.retry("no-such-run")
        for bad in (0, -1, True, "2"):
            with pytest.raises(InvalidInput, match="attempts"):
                await app.retry(queued_id, attempts=bad)  # type: ignore[arg-type]


async def test_a_retry_over_the_tenants_queued_quota_is_refused_and_the_run_stays_failed(
    db_url: str,
) -> None:
    app = Corral(db_url)

    @app.agent("fails")
    async def fails(ctx: RunContext, input: Any) -> None:
        raise RuntimeError("no")

    @app.agent("ok")
    async def ok(ctx: RunContext, input: Any) -> None:
        return None

    async with app:
        run_id = await app.submit("fails", tenant="small", max_attempts=1)
        await work_until_ended(app, run_id, timeout=20, concurrency=1)
        await app.set_tenant("small", max_queued=1)
        await app.submit("ok", tenant="small")  # the quota is full now
        with pytest.raises(BackpressureError):
            await app.retry(run_id)
        run = await app.get(run_id)
        small = (await app.stats()).tenant("small")
    assert run is not None and run.status is RunStatus.FAILED and run.finished_at is not None
    assert small is not None and small.queued == 1


async def test_two_retries_at_once_queue_the_run_once(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("fails")
    async def fails(ctx: RunContext, input: Any) -> None:
        raise RuntimeError("no")

    async with app:
        run_id = await app.submit("fails", tenant="t", max_attempts=1)
        await work_until_ended(app, run_id, timeout=20, concurrency=1)
        outcomes = await asyncio.gather(
            app.retry(run_id), app.retry(run_id), return_exceptions=True
        )
        t = (await app.stats()).tenant("t")
    assert sorted(type(o).__name__ for o in outcomes) == ["Run", "RunNotRetryable"]
    assert t is not None and t.queued == 1


async def test_iter_runs_pages_through_every_run_a_listing_holds(db_url: str) -> None:
    """What the bulk retry walks: every failed run once, newest first, even as each one it
    retried leaves the failed listing between pages."""
    app = Corral(db_url)

    @app.agent("fails")
    async def fails(ctx: RunContext, input: Any) -> None:
        raise RuntimeError("no")

    async with app:
        ids = await app.submit_many([{"agent": "fails", "max_attempts": 1} for _ in range(5)])
        for run_id in ids:
            await work_until_ended(app, run_id, timeout=20, concurrency=1)
        await app.submit("fails", tenant="other")  # queued: not in the failed listing
        seen: list[str] = []
        pages = 0
        async for page in app.iter_runs(status="failed", page=2):
            pages += 1
            for run in page:
                seen.append(run.id)
                await app.retry(run.id)
    assert sorted(seen) == sorted(ids)  # each once
    assert seen == sorted(seen, reverse=True)  # newest (highest id) first
    assert pages == 3
