"""Targeted behaviour of Scheduler: one test per promise, fake clock, no sleeping."""

from __future__ import annotations

import asyncio

import pytest

from corral.contention import AcquireHandle, ManualClock, Scheduler, SharedResource
from corral.errors import BackpressureError, InvalidInput, ShutdownError


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def make(capacity: int = 1, **kw: object) -> tuple[Scheduler, SharedResource, ManualClock]:
    clock = ManualClock()
    res = SharedResource("llm", capacity=capacity)
    return Scheduler(res, clock=clock, **kw), res, clock  # type: ignore[arg-type]


async def hold(s: Scheduler, agent: str, gate: asyncio.Event, log: list[str], **kw: object) -> None:
    async with s.acquire(agent, **kw):  # type: ignore[arg-type]
        log.append(agent)
        await gate.wait()


# -- the loco defects, each shown to be handled -------------------------------------------


async def test_an_exception_in_the_body_releases_and_wakes_the_next_waiter() -> None:
    s, res, _ = make()
    entered: list[str] = []

    async def failing() -> None:
        async with s.acquire("a"):
            entered.append("a")
            await settle()
            raise RuntimeError("the LLM call failed")

    gate = asyncio.Event()
    t1 = asyncio.create_task(failing())
    await asyncio.sleep(0)
    t2 = asyncio.create_task(hold(s, "b", gate, entered))
    await settle()
    with pytest.raises(RuntimeError):
        await t1
    await settle()
    assert entered == ["a", "b"] and res.holders == 1 and s.tick == 1
    gate.set()
    await t2
    assert res.holders == 0


async def test_a_grant_racing_a_cancellation_hands_the_slot_on() -> None:
    s, res, _ = make()
    first = await s.acquire_start("a")
    log: list[str] = []
    gate = asyncio.Event()
    raced = asyncio.create_task(hold(s, "b", gate, log))
    third = asyncio.create_task(hold(s, "c", gate, log))
    await settle()
    await s.release_handle(first)  # grants b at once ...
    raced.cancel()  # ... and b is cancelled before it could resume
    await settle()
    assert raced.cancelled() and log == ["c"]  # b's slot went to c: nothing leaked
    assert res.holders == 1 and s.statistics().cancellations == 1
    gate.set()
    await third
    assert res.holders == 0 and s.statistics().holders == 0


async def test_a_timeout_removes_only_itself_and_wakes_no_sibling() -> None:
    s, res, clock = make()
    holder = await s.acquire_start("x")
    log: list[str] = []
    gate = asyncio.Event()
    impatient = asyncio.create_task(hold(s, "a", gate, log, timeout=1.0))
    sibling = asyncio.create_task(hold(s, "a", gate, log))
    await settle()
    clock.advance(1.0)
    await settle()
    with pytest.raises(TimeoutError):
        await impatient
    assert log == [] and not sibling.done()  # the sibling still waits, without a slot
    assert res.holders == 1 and s.statistics().waiters_by_agent == {"a": 1}
    assert s.statistics().timeouts == 1 and s.tick == 0
    await s.release_handle(holder)
    await settle()
    assert log == ["a"]
    gate.set()
    await sibling


async def test_shutdown_wakes_waiters_with_shutdown_error_and_lets_none_in() -> None:
    s, res, _ = make()
    holder = await s.acquire_start("x")
    log: list[str] = []
    gate = asyncio.Event()
    waiters = [asyncio.create_task(hold(s, f"w{i}", gate, log)) for i in range(3)]
    await settle()
    report = await s.shutdown()
    assert report.cancelled_waiters == 3 and report.active_holders == 1
    for t in waiters:
        with pytest.raises(ShutdownError):
            await t
    assert log == [] and res.holders == 1
    with pytest.raises(ShutdownError):
        await s.acquire_start("late")
    await s.release_handle(holder)  # holders may finish
    assert res.holders == 0 and log == []


async def test_lowering_capacity_grants_nothing_while_holders_are_at_or_over_it() -> None:
    s, res, _ = make(capacity=3)
    handles = [await s.acquire_start(f"h{i}") for i in range(3)]
    log: list[str] = []
    gate = asyncio.Event()
    waiter = asyncio.create_task(hold(s, "w", gate, log))
    await settle()
    res.capacity = 1
    await s.release_handle(handles[0])
    await s.release_handle(handles[1])
    await settle()
    assert log == [] and res.holders == 1  # 1 holder, capacity 1: still no grant
    await s.release_handle(handles[2])
    await settle()
    assert log == ["w"] and res.holders == 1
    gate.set()
    await waiter


# -- admission ---------------------------------------------------------------------------


async def test_no_barging_past_waiters_when_a_slot_frees() -> None:
    s, res, _ = make(capacity=1)
    first = await s.acquire_start("a")
    log: list[str] = []
    gate = asyncio.Event()
    waiter = asyncio.create_task(hold(s, "b", gate, log))
    await settle()
    await s.release_handle(first)  # b is granted at once, before it runs
    late = asyncio.create_task(hold(s, "c", gate, log))
    await settle()
    assert log == ["b"] and res.holders == 1
    gate.set()
    await asyncio.gather(waiter, late)
    assert log == ["b", "c"]


async def test_raising_capacity_grants_waiters_up_to_it_at_once() -> None:
    s, res, _ = make(capacity=1)
    holder = await s.acquire_start("x")
    log: list[str] = []
    gate = asyncio.Event()
    tasks = [asyncio.create_task(hold(s, f"w{i}", gate, log)) for i in range(4)]
    await settle()
    res.capacity = 4
    assert res.holders == 4 and s.statistics().waiters == 1  # granted synchronously
    await settle()
    assert len(log) == 3
    gate.set()
    await s.release_handle(holder)
    await asyncio.gather(*tasks)
    assert res.holders == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_capacity_must_be_an_integer_of_at_least_one(bad: object) -> None:
    with pytest.raises(ValueError):
        SharedResource("r", capacity=bad)  # type: ignore[arg-type]
    res = SharedResource("r", capacity=2)
    with pytest.raises(InvalidInput):
        res.capacity = bad  # type: ignore[assignment]
    assert res.capacity == 2


async def test_backpressure_at_max_waiters_raises_at_once_and_takes_nothing() -> None:
    s, _, _ = make(capacity=1, max_waiters=2, retry_after=3.0)
    holder = await s.acquire_start("x")
    gate = asyncio.Event()
    log: list[str] = []
    tasks = [asyncio.create_task(hold(s, f"w{i}", gate, log)) for i in range(2)]
    await settle()
    with pytest.raises(BackpressureError) as info:
        await s.acquire_start("one-too-many")
    assert info.value.retry_after == 3.0
    st = s.statistics()
    assert st.waiters == 2 and st.rejections == 1 and "one-too-many" not in st.waiters_by_agent
    await s.release_handle(holder)
    gate.set()
    await asyncio.gather(*tasks)


async def test_max_waiters_per_agent_keeps_one_agent_from_taking_the_queue() -> None:
    s, _, _ = make(capacity=1, max_waiters_per_agent=2)
    holder = await s.acquire_start("x")
    gate = asyncio.Event()
    log: list[str] = []
    tasks = [asyncio.create_task(hold(s, "greedy", gate, log)) for _ in range(2)]
    await settle()
    with pytest.raises(BackpressureError):
        await s.acquire_start("greedy")
    tasks.append(asyncio.create_task(hold(s, "other", gate, log)))  # others still get in
    await settle()
    assert s.statistics().waiters_by_agent == {"greedy": 2, "other": 1}
    await s.release_handle(holder)
    gate.set()
    await asyncio.gather(*tasks)


async def test_a_zero_timeout_fails_at_once_when_it_would_have_to_wait() -> None:
    s, _, _ = make()
    holder = await s.acquire_start("x")
    with pytest.raises(TimeoutError):
        await s.acquire_start("y", timeout=0)
    assert s.statistics().waiters == 0
    await s.release_handle(holder)
    granted = await s.acquire_start("y", timeout=0)  # a free slot needs no waiting
    assert granted.granted


@pytest.mark.parametrize("weight", [0.5, 0, -1, float("inf"), float("nan"), "1"])
async def test_weight_must_be_at_least_one(weight: object) -> None:
    s, _, _ = make()
    with pytest.raises(InvalidInput):
        await s.acquire_start("a", weight)  # type: ignore[arg-type]


# -- handles and release -----------------------------------------------------------------


async def test_handles_release_once_by_handle_and_foreign_handles_are_no_ops() -> None:
    s, res, _ = make(capacity=2)
    other, _, _ = make()
    h = await s.acquire_start("a", 2.0)
    assert h.agent_id == "a" and h.granted and h.resources == ("llm",)
    assert h.request is not None and h.request.agent_id == "a" and h.request.weight == 2.0
    await s.release_handle(h)
    assert s.tick == 1 and h.released
    await s.release_handle(h)  # second release: nothing, no tick
    await s.release_handle(AcquireHandle("a"))  # never granted
    foreign = await other.acquire_start("a")
    await s.release_handle(foreign)  # another scheduler's handle
    assert s.tick == 1 and res.holders == 0 and foreign.granted


async def test_the_served_request_of_a_waiter_carries_its_arrival_tick() -> None:
    s, _, _ = make()
    first = await s.acquire_start("x")
    task = asyncio.create_task(s.acquire_start("a", 3.0))
    await settle()
    await s.release_handle(first)
    h = await task
    assert h.request is not None
    assert (h.request.agent_id, h.request.weight, h.request.arrival) == ("a", 3.0, 0)
    assert h.granted_tick == 1
    await s.release_handle(h)


async def test_statistics_report_waits_and_per_agent_state_disappears() -> None:
    s, _, clock = make()
    first = await s.acquire_start("x")
    task = asyncio.create_task(s.acquire_start("a"))
    await settle()
    clock.advance(2.5)
    await s.release_handle(first)
    h = await task
    st = s.statistics()
    assert st.grants == 2 and st.max_wait == 2.5 and st.mean_wait == 1.25
    assert st.max_wait_ticks == 1 and st.holders_by_agent == {"a": 1} and st.tracked_agents == 1
    await s.release_handle(h)
    st = s.statistics()
    assert st.tracked_agents == 0 and st.holders == 0 and st.tick == 2
    assert st.resources["llm"].capacity == 1 and st.resources["llm"].tick == 2


async def test_shutdown_can_wait_for_holders_to_finish() -> None:
    s, _, _ = make(capacity=2)
    h1 = await s.acquire_start("a")
    h2 = await s.acquire_start("b")
    done = asyncio.create_task(s.shutdown(wait=True))
    await settle()
    assert not done.done()
    await s.release_handle(h1)
    await settle()
    assert not done.done()
    await s.release_handle(h2)
    report = await done
    assert report.active_holders == 0
    h3_sched, _, clock3 = make()
    h3 = await h3_sched.acquire_start("c")
    bounded = asyncio.create_task(h3_sched.shutdown(wait=True, timeout=5.0))
    await settle()
    clock3.advance(5.0)
    assert (await bounded).active_holders == 1
    await h3_sched.release_handle(h3)


async def test_hooks_see_every_grant_and_release() -> None:
    seen: list[tuple[str, str]] = []
    s, _, _ = make(
        on_grant=lambda h: seen.append(("grant", h.agent_id)),
        on_release=lambda h: seen.append(("release", h.agent_id)),
    )
    async with s.acquire("a"):
        pass
    assert seen == [("grant", "a"), ("release", "a")]


def test_a_resource_belongs_to_one_scheduler() -> None:
    res = SharedResource("llm", 1)
    Scheduler(res)
    with pytest.raises(InvalidInput):
        Scheduler(res)
    with pytest.raises(InvalidInput):
        Scheduler([SharedResource("x"), SharedResource("x")])
    with pytest.raises(InvalidInput):
        Scheduler([])
    spare = SharedResource("y")
    with pytest.raises(InvalidInput):
        Scheduler(spare, max_waiters=0)
    Scheduler(spare)  # the failed construction did not keep it


async def test_a_shutdown_timeout_ends_only_that_calls_wait() -> None:
    """The first shutdown's timeout used to resolve the wait every shutdown(wait=True)
    shares: a concurrent or later shutdown without a timeout returned while a holder held."""
    s, _, clock = make()
    holder = await s.acquire_start("a")
    bounded = asyncio.create_task(s.shutdown(wait=True, timeout=5.0))
    unbounded = asyncio.create_task(s.shutdown(wait=True))
    await settle()
    clock.advance(5.0)
    assert (await bounded).active_holders == 1
    await settle()
    assert not unbounded.done()
    later = asyncio.create_task(s.shutdown(wait=True))
    await settle()
    assert not later.done()
    await s.release_handle(holder)
    assert (await unbounded).active_holders == 0 and (await later).active_holders == 0


async def test_a_nan_timeout_is_invalid_input_and_leaves_other_timeouts_alone() -> None:
    """A NaN timeout used to be queued with a NaN deadline: on a ManualClock it never came
    due and held up every timer behind it, so other waiters' timeouts never fired."""
    s, _, clock = make()
    holder = await s.acquire_start("x")
    nan = asyncio.create_task(s.acquire_start("nan", timeout=float("nan")))
    await settle()
    assert nan.done()
    with pytest.raises(InvalidInput, match="timeout"):
        nan.result()
    bounded = asyncio.create_task(s.acquire_start("y", timeout=5.0))
    await settle()
    clock.advance(6.0)
    with pytest.raises(TimeoutError):
        await bounded
    assert s.statistics().waiters == 0
    await s.release_handle(holder)


@pytest.mark.parametrize("bad", [-1, float("nan"), "3"])
async def test_a_refused_usage_at_release_still_gives_the_slot_back(bad: object) -> None:
    s, res, _ = make(capacity=1)
    holder = await s.acquire_start("a")
    with pytest.raises(InvalidInput, match="usage"):
        await s.release_handle(holder, usage=bad)  # type: ignore[arg-type]
    assert holder.released and res.holders == 0
    nxt = await asyncio.wait_for(s.acquire_start("b"), timeout=1)
    assert res.holders == 1
    await s.release_handle(nxt)
