"""Code written against loco's core runs unchanged through corral.compat.loco.

``loco_program`` uses loco's names and calls only; it was also run, import swapped for
``from loco import ...``, against loco-agent 0.4.0 with the same results.
"""

from __future__ import annotations

import asyncio

import pytest

from corral.compat.loco import (
    AcquireHandle,
    Agent,
    AsyncLOCOScheduler,
    BackpressureError,
    SharedResource,
    ShutdownError,
    Task,
)


async def loco_program() -> dict[str, object]:
    """A program in loco's documented style: only loco names, loco calls."""
    resource = SharedResource("llm_api", capacity=1)
    agents = [Agent(agent_id="urgent"), Agent(agent_id="batch")]
    scheduler = AsyncLOCOScheduler(agents, resource, alpha=0.25, max_waiters=100)

    for _ in range(5):
        await scheduler.submit_task("batch", Task(weight=1.0))
    await scheduler.submit_task("urgent", Task(weight=3.0))

    served: list[tuple[str, float]] = []

    async def worker(agent_id: str, n: int) -> None:
        for _ in range(n):
            async with scheduler.acquire(agent_id):
                task = scheduler.get_agent(agent_id).serve_oldest_task()
                assert task is not None
                served.append((agent_id, task.weight))
                await asyncio.sleep(0)

    await asyncio.gather(worker("urgent", 1), worker("batch", 5))

    # Split acquire/release, as loco's callback adapters do.
    handle = await scheduler.acquire_start("urgent")
    assert isinstance(handle, AcquireHandle) and handle.agent_id == "urgent"
    busy = (resource.holder_count, resource.available_slots, resource.utilization)
    holding = resource.is_holding("urgent")
    await scheduler.release_handle(handle)
    await scheduler.release_handle(handle)  # safe to call twice

    # Backpressure and timeouts.
    tight = AsyncLOCOScheduler(
        [Agent(agent_id=x) for x in "abcd"], SharedResource("tight", capacity=1), max_waiters=1
    )
    blocker = await tight.acquire_start("a")
    timed_out = False
    try:
        await tight.acquire_start("d", timeout=0)
    except TimeoutError:
        timed_out = True
    await tight.submit_task("b", Task())  # loco grants waiters only for submitted tasks
    waiter = asyncio.create_task(tight.acquire_start("b"))
    await asyncio.sleep(0)
    waiting = tight.resource.waiter_count  # type: ignore[attr-defined]
    rejected = False
    try:
        await tight.acquire_start("c")
    except BackpressureError:
        rejected = True
    await tight.release_handle(blocker)
    await tight.release_handle(await waiter)

    report = await scheduler.shutdown(timeout=1.0)
    refused = False
    try:
        await scheduler.submit_task("batch", Task())
    except ShutdownError:
        refused = True
    return {
        "served": served,
        "busy": busy,
        "holding": holding,
        "tick": scheduler.logical_tick,
        "waiting": waiting,
        "rejected": rejected,
        "timed_out": timed_out,
        "report": report,
        "refused": refused,
        "done": [len(a.completed_tasks) for a in scheduler.agents.values()],
    }


async def test_a_loco_program_runs_unchanged() -> None:
    out = await loco_program()
    assert sorted(out["served"]) == [("batch", 1.0)] * 5 + [("urgent", 3.0)]  # type: ignore[arg-type]
    assert out["busy"] == (1, 0, 1.0) and out["holding"] is True
    assert out["tick"] == 7  # six context-managed releases and one handle release
    assert out["waiting"] == 1 and out["rejected"] and out["timed_out"]
    assert out["report"] == {"cancelled_waiters": 0, "active_holders": 0}
    assert out["refused"] and out["done"] == [1, 5]


async def test_loco_options_map_onto_corral() -> None:
    s = AsyncLOCOScheduler([Agent("a")], SharedResource("r", 2), optimize_for="latency")
    assert s.alpha == 0.0 and s.scheduler.alpha == 0.0
    assert AsyncLOCOScheduler([], SharedResource("r2"), seed=42).alpha == 0.25
    with pytest.raises(ValueError):
        AsyncLOCOScheduler([], SharedResource("r3"), alpha=0.5, optimize_for="latency")
    with pytest.raises(ValueError):
        AsyncLOCOScheduler([], SharedResource("r4"), optimize_for="fastest")
    with pytest.raises(ValueError):
        Task(weight=0.5)
    with pytest.raises(ValueError):
        s.get_agent("nobody")
    s.register_agent(Agent("b"))
    with pytest.raises(ValueError):
        s.register_agent(Agent("b"))
    h = await s.acquire_start("b")
    with pytest.raises(RuntimeError):
        s.unregister_agent("b")
    await s.release_handle(h)
    assert s.unregister_agent("b").agent_id == "b"


async def test_weights_come_from_submitted_tasks_and_ages_follow_ticks() -> None:
    started: list[tuple[str, str]] = []
    completed: list[str] = []
    s = AsyncLOCOScheduler(
        [],
        SharedResource("r", 1),
        on_task_started=lambda a, t: started.append((a, t.task_id)),
        on_task_completed=lambda a, t, r: completed.append(t.task_id),
    )
    heavy = Task(task_id="heavy", weight=3.0)
    await s.submit_task("a", heavy)
    blocker = await s.acquire_start("x")
    waiter = asyncio.create_task(s.acquire_start("a"))
    await asyncio.sleep(0)
    (req,) = s.scheduler.queue().requests()
    assert req.weight == 3.0  # the acquire carries its oldest task's weight
    await s.release_handle(blocker)
    h = await waiter
    assert heavy.age == 1 and s.get_agent("a").dmax == 1.0
    assert s.get_agent("a").queue_depth_weighted == 3.0
    assert started == [("a", "heavy")]
    s.get_agent("a").serve_oldest_task()
    await s.release_handle(h)
    assert heavy.age == 1 and completed == ["heavy"]  # aging stops once served


async def test_tasks_an_agent_comes_with_age_like_submitted_ones() -> None:
    """As in loco, every task queued to a registered agent ages on each release: tasks given
    to Agent(tasks=...) (at construction or register_agent) used to stay at their age, so
    serve_oldest_task served a later-submitted task before them."""
    first = Task(task_id="first")
    late = Task(task_id="late")
    s = AsyncLOCOScheduler([Agent("a", tasks=[first]), Agent("b")], SharedResource("r", 1))
    s.register_agent(Agent("c", tasks=[late]))
    await s.submit_task("a", Task(task_id="second"))
    for _ in range(3):
        async with s.acquire("b"):
            pass
    assert (first.age, late.age) == (3, 3)
    assert s.get_agent("a").dmax == 3.0
    served = s.get_agent("a").serve_oldest_task()
    assert served is not None and served.task_id == "first"
