"""Budgets: reserve at grant, settle actual usage at release, reject / alert / downgrade."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.contention import (
    AcquireHandle,
    Budget,
    BudgetAlert,
    ManualClock,
    Scheduler,
    SharedResource,
)
from corral.errors import BudgetExceeded, InvalidInput


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def make(budget: Budget, capacity: int = 3) -> Scheduler:
    return Scheduler(SharedResource("llm", capacity), budget=budget, clock=ManualClock())


async def test_reject_mode_refuses_at_once_and_takes_nothing() -> None:
    budget = Budget({"a": 10.0})
    s = make(budget)
    h = await s.acquire_start("a", cost=8.0)
    assert budget.reserved("a") == 8.0 and budget.remaining("a") == 2.0
    with pytest.raises(BudgetExceeded) as info:
        await s.acquire_start("a", cost=3.0)
    assert info.value.requested == 3.0 and info.value.remaining == 2.0
    assert s.statistics().holders == 1 and s.statistics().budget_rejections == 1
    await s.release_handle(h, usage=7.5)
    assert budget.spent("a") == 7.5 and budget.reserved("a") == 0.0
    assert s.statistics().spend == {"a": 7.5}
    h2 = await s.acquire_start("a", cost=2.5)  # exactly what is left
    await s.release_handle(h2)  # no usage reported: the expected cost is charged
    assert budget.spent("a") == 10.0
    with pytest.raises(BudgetExceeded):
        await s.acquire_start("a")  # nothing left, even for a call of unknown cost
    assert (await s.acquire_start("b", cost=100.0)).granted  # no limit for b


async def test_concurrent_calls_cannot_overshoot_because_grants_reserve() -> None:
    budget = Budget({"a": 10.0})
    s = make(budget, capacity=5)
    granted = [await s.acquire_start("a", cost=4.0) for _ in range(2)]
    with pytest.raises(BudgetExceeded):
        await s.acquire_start("a", cost=4.0)  # 4 + 4 reserved, 4 more would overshoot
    for h in granted:
        await s.release_handle(h, usage=4.0)
    assert budget.spent("a") == 8.0


async def test_a_waiting_call_is_rejected_at_grant_if_the_budget_ran_out_meanwhile() -> None:
    budget = Budget({"a": 10.0})
    s = make(budget, capacity=1)
    blocker = await s.acquire_start("x")
    w1 = asyncio.create_task(s.acquire_start("a", cost=6.0))
    w2 = asyncio.create_task(s.acquire_start("a", cost=6.0))
    await settle()  # both admitted: nothing was reserved yet
    await s.release_handle(blocker)
    h1 = await w1
    await s.release_handle(h1, usage=6.0)  # 4 left: w2 cannot be granted any more
    with pytest.raises(BudgetExceeded):
        await w2
    st = s.statistics()
    assert st.holders == 0 and st.waiters == 0 and st.budget_rejections == 1


async def test_a_failed_call_is_charged_what_it_actually_used() -> None:
    budget = Budget({"a": 100.0})
    s = make(budget)
    with pytest.raises(RuntimeError):
        async with s.acquire("a", cost=50.0) as h:
            h.report_usage(12.0)
            raise RuntimeError("provider error after streaming some tokens")
    assert budget.spent("a") == 12.0 and budget.reserved("a") == 0.0
    with pytest.raises(RuntimeError):
        async with s.acquire("a", cost=50.0):
            raise RuntimeError("failed before using anything")
    assert budget.spent("a") == 12.0


async def test_alert_mode_lets_the_call_through_and_records_an_alert() -> None:
    alerts: list[BudgetAlert] = []
    budget = Budget(default_limit=5.0, mode="alert", on_alert=alerts.append)
    s = make(budget)
    async with s.acquire("a", cost=8.0) as h:
        assert h.over_budget and not h.downgrade
    assert budget.spent("a") == 8.0
    assert alerts == budget.alerts and alerts[0].agent_id == "a" and alerts[0].limit == 5.0


async def test_downgrade_mode_tells_the_holder_through_its_handle() -> None:
    budget = Budget({"a": 5.0}, mode="downgrade")
    s = make(budget)
    async with s.acquire("a", cost=3.0) as h:
        assert not h.downgrade
        h.report_usage(3.0)
    async with s.acquire("a", cost=3.0) as h:
        assert h.downgrade and h.over_budget  # use the cheaper model
        h.report_usage(0.5)
    assert budget.spent("a") == 3.5


def test_budget_validation_and_reset() -> None:
    with pytest.raises(InvalidInput):
        Budget(mode="explode")
    with pytest.raises(InvalidInput):
        Budget({"a": -1.0})
    b = Budget({"a": 2.0})
    b.settle("a", 0.0, 1.5)
    assert b.spend() == {"a": 1.5} and b.remaining("a") == 0.5
    b.set_limit("a", None)
    assert b.limit("a") is None and b.remaining("a") is None
    b.reset("a")
    assert b.spent("a") == 0.0


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(1, 30),
    capacity=st.integers(1, 4),
    steps=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9)), min_size=5, max_size=60),
)
def test_concurrent_calls_never_overshoot_a_reject_budget(
    limit: int, capacity: int, steps: list[tuple[int, int]]
) -> None:
    """Random acquires (costs 0-9) and releases: spent + reserved never passes the limit."""

    async def run() -> None:
        budget = Budget({"a": float(limit)})
        s = make(budget, capacity=capacity)
        tasks: list[asyncio.Task[AcquireHandle]] = []
        held: list[AcquireHandle] = []

        def check() -> None:
            assert budget.spent("a") + budget.reserved("a") <= limit
            assert budget.reserved("a") == sum(h.cost for h in held if h.granted)

        for kind, cost in steps:
            if kind < 2:
                tasks.append(asyncio.create_task(s.acquire_start("a", cost=float(cost))))
            elif held:
                h = held.pop(0)
                await s.release_handle(h, usage=h.cost)
            await settle()
            for t in [t for t in tasks if t.done()]:
                tasks.remove(t)
                if t.exception() is None:
                    held.append(t.result())
                else:
                    assert isinstance(t.exception(), BudgetExceeded)
            check()
        while held or tasks:
            for h in held:
                await s.release_handle(h, usage=h.cost)
            held.clear()
            await settle()
            for t in [t for t in tasks if t.done()]:
                tasks.remove(t)
                if t.exception() is None:
                    held.append(t.result())
            check()

    asyncio.run(run())
