"""Property-based schedules against the model in harness.py (fake clock, no sleeping).

Each example drives one scheduler through a random mix of acquires (context manager and
split form), body completions and exceptions, cancellations (waiting and holding),
grant/cancel races, timeouts, capacity changes and a shutdown. After every step the
harness checks: capacity never exceeded at a grant, no ghost waiter, no leaked slot,
per-agent state only for active agents, backpressure exactly at max_waiters, and every
grant is the argmax of L(i) computed directly. At the end releases continue until every
waiter has been served.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.contention.harness import Harness

# A step is four small integers; the first picks the kind with fixed odds (acquire 45%,
# finish 25%, grant/cancel races 8%, cancel 8%, advance the clock 7%, capacity change 7%),
# the others are its arguments. Shutdown happens at most once, at a drawn step (or never).
step = st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99))
ops = st.lists(step, min_size=20, max_size=80)
configs = st.fixed_dictionaries(
    {
        "capacity": st.integers(1, 3),
        "alpha": st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
        "max_waiters": st.integers(1, 12),
        "max_per_agent": st.one_of(st.none(), st.integers(1, 4)),
        "shutdown_at": st.one_of(st.none(), st.none(), st.integers(0, 50)),
    }
)


async def play(config: dict[str, Any], steps: list[tuple[int, int, int, int]]) -> Harness:
    config = dict(config)
    shutdown_at = config.pop("shutdown_at", None)
    h = Harness(**config)
    for i, (kind, x, y, z) in enumerate(steps):
        if i == shutdown_at:
            await h.shutdown()
        elif kind < 45:
            timeout = None if y < 50 else float(1 + y % 3)
            await h.acquire(f"agent-{x % 5}", 1 + z % 3, timeout, split=z >= 50)
        elif kind < 70:
            holders = h.holding()
            if holders:
                await h.finish(holders[x % len(holders)], fail=y < 30)
        elif kind < 78:
            split_holders = [c for c in h.holding() if c.split]
            waiters = h.waiting()
            if split_holders and waiters and y < 50:
                await h.cancel_waiter_then_release(
                    waiters[z % len(waiters)], split_holders[x % len(split_holders)]
                )
            elif split_holders:
                await h.release_then_cancel_granted(split_holders[x % len(split_holders)])
        elif kind < 86:
            live = [c for c in h.waiting() + h.holding() if not (c.split and c.entered)]
            if live:
                await h.cancel(live[x % len(live)])
        elif kind < 93:
            await h.advance(1 + x % 3)
        else:
            await h.set_capacity(1 + x % 4)
        h.check()
    await h.drain()
    h.check()
    return h


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, steps=ops)
def test_random_schedules_keep_every_invariant(
    config: dict[str, Any], steps: list[tuple[int, int, int, int]]
) -> None:
    asyncio.run(play(config, steps))


@settings(max_examples=60, deadline=None)
@given(
    alpha=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
    plan=st.lists(st.tuples(st.integers(0, 6), st.integers(1, 3)), min_size=1, max_size=40),
)
def test_contended_grants_follow_the_load_score(alpha: float, plan: list[tuple[int, int]]) -> None:
    """Many waiters at capacity 1, then releases one by one: each grant is checked."""

    async def run() -> None:
        h = Harness(capacity=1, alpha=alpha, max_waiters=100)
        await h.acquire("holder", 1, None, True)
        for agent, weight in plan:
            await h.acquire(f"agent-{agent}", weight, None, False)
            h.check()
        await h.drain()
        assert h.grants == len(plan) + 1

    asyncio.run(run())
