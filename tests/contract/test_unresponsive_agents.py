"""An agent told to stop (its run cancelled, its timeout passed, the worker draining) that
ignores the cancellation does not hold its run hostage: after the worker's ``stop_grace`` the
worker ends the run as the stop meant, stops heartbeating it, and the store refuses the
agent's writes. The agent's task, which nothing can stop from outside, keeps its slot until it
ends, and whatever it returns then is not recorded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import pytest

from corral import Corral, InvalidInput, RunContext
from corral.models import RunStatus
from corral.worker import Worker

pytestmark = pytest.mark.timeout(60)

GRACE = 0.5


class Stubborn:
    """An agent that swallows every cancellation until ``let_go`` is set, then returns."""

    def __init__(self) -> None:
        self.let_go = asyncio.Event()
        self.started = asyncio.Event()
        self.swallowed = 0
        self.ended = asyncio.Event()

    async def run(self, ctx: RunContext, input: Any) -> str:
        self.started.set()
        try:
            while not self.let_go.is_set():
                try:
                    await self.let_go.wait()
                except asyncio.CancelledError:
                    self.swallowed += 1
            return "late result"
        finally:
            self.ended.set()


async def run_worker(app: Corral, **options: Any) -> tuple[Worker, asyncio.Task[None]]:
    worker = app.worker(
        **{"poll_interval": 0.05, "lease_ttl": 1.5, "stop_grace": GRACE, "retry_base": 0, **options}
    )
    return worker, asyncio.create_task(worker.run())


async def stop(worker: Worker, task: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(task, 30)


async def test_a_cancelled_run_ends_cancelled_though_its_agent_ignores_it(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = Corral(db_url)
    agent = Stubborn()
    app.agent("stubborn")(agent.run)

    @app.agent("quick")
    async def quick(ctx: RunContext, input: Any) -> str:
        return "ok"

    async with app:
        run_id = await app.submit("stubborn")
        worker, task = await run_worker(app, concurrency=1)
        try:
            await asyncio.wait_for(agent.started.wait(), 10)
            next_id = await app.submit("quick")
            cancelled_at = time.monotonic()
            await app.cancel(run_id)
            run = await app.wait(run_id, timeout=10)
            took = time.monotonic() - cancelled_at
            assert run.status is RunStatus.CANCELLED
            # the cancel is seen at the next heartbeat (ttl/3), then the grace
            assert took < 1.5 / 3 + GRACE + 2
            assert agent.swallowed >= 1 and not agent.ended.is_set()
            assert worker.stuck == [run_id]
            # the task still runs, in the worker's only slot: nothing else starts meanwhile
            await asyncio.sleep(0.5)
            assert (await app.get(next_id)).status is RunStatus.QUEUED
            agent.let_go.set()
            assert (await app.wait(next_id, timeout=10)).status is RunStatus.SUCCEEDED
            assert worker.stuck == []
        finally:
            agent.let_go.set()
            await stop(worker, task)
        run = await app.get(run_id)
    assert run.status is RunStatus.CANCELLED and run.result is None  # its late result dropped
    given_up = [r for r in caplog.records if "did not stop within" in r.getMessage()]
    assert len(given_up) == 1 and given_up[0].levelno == logging.WARNING
    assert "recorded cancelled" in given_up[0].getMessage()
    assert "in run\n" in given_up[0].getMessage()  # where the agent was


async def test_a_timed_out_attempt_fails_though_its_agent_ignores_the_timeout(
    db_url: str,
) -> None:
    app = Corral(db_url)
    agent = Stubborn()
    app.agent("stubborn", timeout=0.3)(agent.run)

    async with app:
        run_id = await app.submit("stubborn", max_attempts=1)
        worker, task = await run_worker(app, concurrency=2)
        try:
            began = time.monotonic()
            run = await app.wait(run_id, timeout=10)
            took = time.monotonic() - began
            assert not agent.ended.is_set()
        finally:
            agent.let_go.set()
            await stop(worker, task)
    assert run.status is RunStatus.FAILED
    assert run.error["type"] == "AgentTimeout"
    assert run.error["message"] == "agent 'stubborn' ran past its timeout of 0.3 s"
    assert "the agent, not stopping, was at:" in run.error["traceback"]
    assert "in run\n" in run.error["traceback"]
    assert took < 0.3 + GRACE + 3


async def test_a_stop_swallowed_then_a_result_returned_is_not_a_success(db_url: str) -> None:
    """Within the grace, an agent that swallows its stop and returns a value still ends as the
    stop meant: past its timeout it failed, cancelled it is cancelled."""
    app = Corral(db_url)
    started = asyncio.Event()

    async def swallow_then_return(ctx: RunContext, input: Any) -> str:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return "finished anyway"

    app.agent("timed", timeout=0.2)(swallow_then_return)
    app.agent("untimed")(swallow_then_return)

    async with app:
        timed = await app.submit("timed", max_attempts=1)
        worker, task = await run_worker(app, concurrency=1)
        try:
            timed_run = await app.wait(timed, timeout=10)
            started.clear()
            untimed = await app.submit("untimed")
            await asyncio.wait_for(started.wait(), 10)
            await app.cancel(untimed)
            untimed_run = await app.wait(untimed, timeout=10)
            assert worker.stuck == []
        finally:
            await stop(worker, task)
    assert timed_run.status is RunStatus.FAILED and timed_run.error["type"] == "AgentTimeout"
    assert timed_run.result is None
    assert untimed_run.status is RunStatus.CANCELLED and untimed_run.result is None


async def test_a_stop_the_agent_turns_into_an_error_still_ends_as_the_stop_meant(
    db_url: str,
) -> None:
    """An agent whose cleanup raises an error of its own in place of the cancellation (a
    client library wrapping it, say) is still stopped by the worker: a drain releases its
    run without counting an attempt, past its timeout it fails with AgentTimeout."""
    app = Corral(db_url)
    started = asyncio.Event()

    async def wrap_the_cancellation(ctx: RunContext, input: Any) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError as exc:
            raise RuntimeError("request interrupted") from exc
        return "unreachable"

    app.agent("timed", timeout=0.2)(wrap_the_cancellation)
    app.agent("untimed")(wrap_the_cancellation)

    async with app:
        timed = await app.submit("timed", max_attempts=1)
        worker, task = await run_worker(app, concurrency=1, drain_timeout=0.1)
        try:
            timed_run = await app.wait(timed, timeout=10)
            started.clear()
            drained = await app.submit("untimed", max_attempts=1)
            await asyncio.wait_for(started.wait(), 10)
        finally:
            await stop(worker, task)
        drained_run = await app.get(drained)
    assert timed_run.status is RunStatus.FAILED and timed_run.error["type"] == "AgentTimeout"
    assert (drained_run.status, drained_run.attempts) == (RunStatus.QUEUED, 0)  # released


async def test_a_drain_ends_and_releases_a_run_whose_agent_ignores_it(db_url: str) -> None:
    app = Corral(db_url)
    agent = Stubborn()
    app.agent("stubborn")(agent.run)

    async with app:
        run_id = await app.submit("stubborn")
        worker, task = await run_worker(app, concurrency=1, drain_timeout=0.3)
        try:
            await asyncio.wait_for(agent.started.wait(), 10)
            worker.stop()
            began = time.monotonic()
            await asyncio.wait_for(asyncio.shield(task), 10)
            took = time.monotonic() - began
            assert worker.stuck == [run_id]
            run = await app.get(run_id)
            assert run.status is RunStatus.QUEUED and run.attempts == 0  # released
            # the task left running can no longer write: its run is queued, not its lease
            agent.let_go.set()
            await asyncio.wait_for(agent.ended.wait(), 10)
            await asyncio.sleep(0.1)
            run = await app.get(run_id)
            assert run.status is RunStatus.QUEUED and run.result is None
            assert worker.stuck == []
        finally:
            agent.let_go.set()
            await asyncio.wait_for(task, 30)
    assert took < 0.3 + GRACE + 2


async def test_an_agent_that_stops_within_the_grace_is_not_given_up(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = Corral(db_url)
    started = asyncio.Event()
    cleaned_up: list[str] = []

    @app.agent("tidy")
    async def tidy(ctx: RunContext, input: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(GRACE / 2)  # cleanup that takes a while, then the stop
            cleaned_up.append(ctx.run_id)
            raise

    async with app:
        run_id = await app.submit("tidy")
        worker, task = await run_worker(app, concurrency=1)
        try:
            await asyncio.wait_for(started.wait(), 10)
            await app.cancel(run_id)
            run = await app.wait(run_id, timeout=10)
            await asyncio.sleep(GRACE)  # past the grace: nothing more happens
        finally:
            await stop(worker, task)
    assert run.status is RunStatus.CANCELLED
    assert cleaned_up == [run_id] and worker.stuck == []
    assert not [r for r in caplog.records if "did not stop within" in r.getMessage()]


@pytest.mark.parametrize("bad", [-1, float("nan"), "5", True])
def test_a_stop_grace_that_is_not_a_number_of_seconds_is_refused(bad: object) -> None:
    with pytest.raises(InvalidInput, match="stop_grace"):
        Corral("sqlite:///:memory:").worker(stop_grace=bad)  # type: ignore[arg-type]


async def test_run_worker_returns_its_worker_naming_the_agents_still_running(
    db_url: str,
) -> None:
    """What a library user needs to end the process past a stuck agent (``os._exit``), as
    ``corral worker`` does: ``asyncio.run`` would wait for the agent without a bound."""
    app = Corral(db_url)
    agent = Stubborn()
    app.agent("stubborn", timeout=0.3)(agent.run)
    async with app:
        run_id = await app.submit("stubborn", max_attempts=1)
        try:
            worker = await asyncio.wait_for(
                app.run_worker(
                    until_idle=True, poll_interval=0.05, lease_ttl=1.5, stop_grace=GRACE
                ),
                30,
            )
            assert isinstance(worker, Worker) and worker.stuck == [run_id]
            assert (await app.get(run_id)).status is RunStatus.FAILED
        finally:
            agent.let_go.set()
        await asyncio.wait_for(agent.ended.wait(), 10)
        assert worker.stuck == []
