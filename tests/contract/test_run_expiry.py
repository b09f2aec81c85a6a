"""``start_within``: a run that has not started that long after it is due ends failed with
RunExpired, its agent never called and without retries; a run started in time, a delayed run
counted from its due time, and a run past its first attempt are untouched."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import Corral, InvalidInput, RunContext
from corral.models import RunStatus
from tests.support.inprocess import work_until_all_ended

pytestmark = pytest.mark.timeout(60)


def build(db_url: str, calls: list[Any]) -> Corral:
    app = Corral(db_url)

    @app.agent("answer")
    async def answer(ctx: RunContext, input: Any) -> Any:
        calls.append(input)
        return input

    return app


async def test_a_run_not_started_within_its_limit_ends_unrun_and_unretried(
    db_url: str,
) -> None:
    calls: list[Any] = []
    app = build(db_url, calls)
    async with app:
        stale = await app.submit("answer", "stale", start_within=0.2, max_attempts=3)
        patient = await app.submit("answer", "patient", start_within=60)
        unbounded = await app.submit("answer", "unbounded")
        before = await app.get(stale)
        await asyncio.sleep(0.5)  # nobody works: the first run's limit passes
        ended = await work_until_all_ended(app, [stale, patient, unbounded], timeout=20)
    assert before.start_by == pytest.approx(before.available_at + 0.2)
    expired, ran, other = ended
    assert expired.status is RunStatus.FAILED and expired.attempts == 1  # no retries
    assert expired.error["type"] == "RunExpired"
    assert f"run {stale} was not started in time" in expired.error["message"]
    assert ran.status is other.status is RunStatus.SUCCEEDED
    assert sorted(calls) == ["patient", "unbounded"]  # the expired run's agent never ran


async def test_a_delayed_run_counts_from_its_due_time(db_url: str) -> None:
    calls: list[Any] = []
    app = build(db_url, calls)
    async with app:
        # due in 0.5 s and must start within 1 s of that: a worker running throughout
        # starts it at its due time, long after the submit
        run_id = await app.submit("answer", "later", delay=0.5, start_within=1)
        (run,) = await work_until_all_ended(app, [run_id], timeout=20)
    assert run.status is RunStatus.SUCCEEDED and calls == ["later"]
    assert run.start_by == pytest.approx(run.available_at + 1)


async def test_an_operators_retry_runs_an_expired_run(db_url: str) -> None:
    calls: list[Any] = []
    app = build(db_url, calls)
    async with app:
        run_id = await app.submit("answer", "again", start_within=0.1)
        await asyncio.sleep(0.3)
        (expired,) = await work_until_all_ended(app, [run_id], timeout=20)
        assert expired.error["type"] == "RunExpired" and calls == []
        await app.retry(run_id)  # its next delivery is not its first attempt: it runs
        (ran,) = await work_until_all_ended(app, [run_id], timeout=20)
    assert ran.status is RunStatus.SUCCEEDED and calls == ["again"]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "5", True])
async def test_a_start_within_that_is_not_a_positive_number_is_refused(
    db_url: str, bad: object
) -> None:
    async with Corral(db_url) as app:
        with pytest.raises(InvalidInput, match="start_within"):
            await app.submit("echo", start_within=bad)  # type: ignore[arg-type]
        assert (await app.stats()).queued == 0


async def test_a_late_run_expires_even_on_a_worker_without_its_agent(db_url: str) -> None:
    """Expiry comes before the agent is looked up: otherwise the first attempt failed as
    'agent not on this worker', and the retry, no longer a first attempt, never expired."""
    async with Corral(db_url) as client:  # a bare client: any agent name is accepted
        run_id = await client.submit("elsewhere", start_within=0.1)
    await asyncio.sleep(0.3)
    calls: list[Any] = []
    app = build(db_url, calls)  # has "answer", not "elsewhere"
    async with app:
        (run,) = await work_until_all_ended(app, [run_id], timeout=10)
    assert run.status is RunStatus.FAILED and run.attempts == 1
    assert run.error["type"] == "RunExpired"


async def test_a_child_not_started_within_its_limit_fails_its_parents_wait(db_url: str) -> None:
    app = Corral(db_url)
    calls: list[str] = []

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> Any:
        calls.append(input)
        return input

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> Any:
        late = await ctx.spawn("child", "late", start_within=0.1)
        calm = await ctx.spawn("child", "calm", start_within=60)
        # the parent holds the only slot past the first child's limit
        await ctx.step("hold", asyncio.sleep, 0.4)
        outcomes = await ctx.wait(late, calm, return_exceptions=True)
        return [getattr(o, "status", o) for o in outcomes]

    @app.agent("careless")
    async def careless(ctx: RunContext, input: Any) -> Any:
        try:
            await ctx.spawn("child", "never", start_within=0)
        except InvalidInput as exc:
            return str(exc)
        return "spawned"

    async with app:
        root = await app.submit("parent")
        refused = await app.submit("careless")
        ended, other = await work_until_all_ended(app, [root, refused], timeout=20, concurrency=1)
        kids = await app.list_runs(agent="child")
    assert ended.status is RunStatus.SUCCEEDED, ended.error
    assert ended.result == ["failed", "calm"]
    late_run = next(k for k in kids if k.input == "late")
    assert late_run.error["type"] == "RunExpired" and calls == ["calm"]
    assert "start_within" in other.result and len(kids) == 2  # nothing spawned for it
