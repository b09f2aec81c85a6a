"""An agent's ``timeout`` bounds each attempt: a run past it is stopped, its attempt failed
with AgentTimeout and retried like any failure, and its slot is free for the next run. A
TimeoutError of the agent's own is not the agent's timeout."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from corral import Corral, InvalidInput, RunContext, StepPolicy
from corral.errors import AgentTimeout
from corral.models import RunStatus
from tests.support.inprocess import work_until_all_ended, work_until_ended

pytestmark = pytest.mark.timeout(60)


async def test_an_attempt_past_its_timeout_is_stopped_retried_then_dead_lettered(
    db_url: str,
) -> None:
    app = Corral(db_url)
    attempts: list[int] = []
    stopped: list[int] = []

    @app.agent("hangs", timeout=0.2)
    async def hangs(ctx: RunContext, input: Any) -> None:
        attempts.append(ctx.attempt)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(ctx.attempt)
            raise

    async with app:
        run_id = await app.submit("hangs", max_attempts=2)
        began = time.monotonic()
        run = await work_until_ended(app, run_id, timeout=20, concurrency=1, retry_base=0)
        took = time.monotonic() - began
    assert run.status is RunStatus.FAILED
    assert run.attempts == 2
    assert attempts == [1, 2] and stopped == [1, 2]
    assert run.error["type"] == "AgentTimeout"
    assert run.error["message"] == "agent 'hangs' ran past its timeout of 0.2 s"
    assert run.error["attempt"] == 2
    assert ", in hangs\n" in run.error["traceback"]  # where the agent was stuck
    assert took < 10  # two attempts of 0.2 s, not a lease TTL or a hang


async def test_a_timed_out_attempt_frees_its_slot_and_the_retry_can_succeed(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("slow_first", timeout=0.2)
    async def slow_first(ctx: RunContext, input: Any) -> int:
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return ctx.attempt

    @app.agent("quick")
    async def quick(ctx: RunContext, input: Any) -> str:
        return "ok"

    async with app:
        slow_id = await app.submit("slow_first", max_attempts=3)
        quick_id = await app.submit("quick")
        # one slot: the quick run can only start once the first attempt was stopped
        run = await work_until_ended(app, slow_id, timeout=20, concurrency=1, retry_base=0)
        other = await app.wait(quick_id, timeout=10)
    assert run.status is RunStatus.SUCCEEDED
    assert run.result == 2 and run.attempts == 2
    assert other.status is RunStatus.SUCCEEDED


async def test_a_run_within_its_timeout_is_untouched(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("brief", timeout=5)
    async def brief(ctx: RunContext, input: Any) -> Any:
        await asyncio.sleep(0.05)
        return input

    async with app:
        run_id = await app.submit("brief", {"x": 1})
        run = await work_until_ended(app, run_id, timeout=20, concurrency=1)
    assert run.status is RunStatus.SUCCEEDED
    assert run.result == {"x": 1} and run.attempts == 1


async def test_the_agents_own_timeout_error_is_not_its_timeout(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("calls_out", timeout=30)
    async def calls_out(ctx: RunContext, input: Any) -> None:
        await asyncio.wait_for(asyncio.sleep(10), 0.01)  # a client call that timed out

    async with app:
        run_id = await app.submit("calls_out", max_attempts=1)
        run = await work_until_ended(app, run_id, timeout=20, concurrency=1)
    assert run.status is RunStatus.FAILED
    assert run.error["type"] == "TimeoutError"


async def test_the_timeout_stops_an_attempt_inside_a_step_that_has_retries_of_its_own(
    db_url: str,
) -> None:
    """The step's retry loop and its own per-try timeout do not swallow the agent's."""
    app = Corral(db_url)
    tries: list[int] = []

    async def call_model() -> str:
        tries.append(1)
        await asyncio.sleep(30)
        return "never"

    @app.agent("stepper", timeout=0.3)
    async def stepper(ctx: RunContext, input: Any) -> Any:
        return await ctx.step("model", call_model, policy=StepPolicy(retries=5, timeout=10))

    async with app:
        run_id = await app.submit("stepper", max_attempts=1)
        run = await work_until_ended(app, run_id, timeout=20, concurrency=1)
    assert run.status is RunStatus.FAILED
    assert run.error["type"] == "AgentTimeout"
    assert tries == [1]


async def test_a_workers_agent_timeout_bounds_agents_without_their_own(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("unbounded")
    async def unbounded(ctx: RunContext, input: Any) -> None:
        await asyncio.sleep(30)

    @app.agent("own_limit", timeout=5)
    async def own_limit(ctx: RunContext, input: Any) -> str:
        await asyncio.sleep(0.5)  # past the worker's default, within its own
        return "kept its own"

    async with app:
        hung = await app.submit("unbounded", max_attempts=1)
        slow = await app.submit("own_limit", max_attempts=1)
        stopped, finished = await work_until_all_ended(
            app, [hung, slow], timeout=20, concurrency=2, agent_timeout=0.2
        )
        with pytest.raises(InvalidInput, match="agent_timeout"):
            app.worker(agent_timeout=0)
    assert stopped.status is RunStatus.FAILED
    assert stopped.error["message"] == "agent 'unbounded' ran past its timeout of 0.2 s"
    assert finished.status is RunStatus.SUCCEEDED and finished.result == "kept its own"


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "5", True])
def test_a_timeout_that_is_not_a_positive_number_is_refused(bad: object) -> None:
    app = Corral("sqlite:///:memory:")
    with pytest.raises(InvalidInput, match="timeout"):
        app.agent("x", timeout=bad)  # type: ignore[arg-type]
    assert "x" not in app.agents


def test_the_error_names_the_agent_and_the_limit() -> None:
    err = AgentTimeout("summarise", 90.0)
    assert err.code == "agent_timeout"
    assert str(err) == "agent 'summarise' ran past its timeout of 90 s"
