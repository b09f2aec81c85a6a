"""The shared grant step runs in SQL (``grant_next`` in ``sql/<dialect>/resources.sql``) so
that a hand-off is one round trip. It must serve exactly whom the in-process scheduler's pure
``choose`` serves: this drives random queues through releases on every backend and checks
each grant against ``choose`` on the rows the store held just before."""

from __future__ import annotations

import random
from typing import Any

import pytest

from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.contention.score import AgentLoad, choose
from corral.store import create_store
from corral.store.sql_resources import ResourceLimits

pytestmark = pytest.mark.timeout(120)


async def rows(store: Any, sql: str) -> list[tuple[Any, ...]]:
    async def body(tx: Any) -> list[tuple[Any, ...]]:
        return list(await tx.fetchall(sql))

    result: list[tuple[Any, ...]] = await store._read(body)
    return result


async def expected_grant(store: Any, name: str, alpha: float) -> str | None:
    """Whom ``choose`` serves once the single holder of ``name`` releases."""
    waiting = await rows(
        store,
        "SELECT request_id, agent_id, weight, arrival_tick, seq FROM corral_resource_requests "
        f"WHERE resource = '{name}' AND state = 'waiting'",
    )
    ((tick,),) = await rows(store, f"SELECT tick FROM corral_resources WHERE name = '{name}'")
    loads: dict[str, list[Any]] = {}
    oldest: dict[str, tuple[int, str]] = {}
    for request_id, agent, weight, arrival, seq in waiting:
        load = loads.setdefault(agent, [0.0, arrival, seq])
        load[0] += weight
        load[1], load[2] = min(load[1], arrival), min(load[2], seq)
        oldest[agent] = min(oldest.get(agent, (seq, request_id)), (seq, request_id))
    agents = [AgentLoad(a, q, int(arr), int(s)) for a, (q, arr, s) in loads.items()]
    winner = choose(agents, int(tick) + 1, alpha)  # the release advances the tick first
    return None if winner is None else oldest[winner][1]


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.75, 1.0])
async def test_every_shared_grant_goes_where_choose_says(db_url: str, alpha: float) -> None:
    rng = random.Random(f"grant-order-{alpha}")
    store: Any = create_store(db_url, StoreConfig(), FakeClock())
    await store.open()
    name = "order"
    await store.define_resource(ResourceLimits(name, capacity=1, alpha=alpha))
    args = {"ttl": 3600.0, "max_waiters": 1000, "max_waiters_per_agent": None, "tokens": 0}
    holder = "h0"
    assert await store.resource_request(name, holder, "x", weight=1.0, **args) == "holding"
    checked = 0
    for step in range(160):
        if rng.random() < 0.6:  # a new waiting request: weights 1-3, six agents
            agent = f"agent-{rng.randrange(6)}"
            weight = float(rng.choice([1, 1, 2, 3]))
            state = await store.resource_request(name, f"r{step}", agent, weight=weight, **args)
            assert state == "waiting"
            continue
        want = await expected_grant(store, name, alpha)
        await store.resource_release(name, holder, tokens_used=None, ttl=3600.0)
        holding = await rows(
            store,
            "SELECT request_id FROM corral_resource_requests "
            f"WHERE resource = '{name}' AND state = 'holding'",
        )
        got = holding[0][0] if holding else None
        assert got == want, (step, alpha)
        if got is None:  # nobody was waiting: take the slot again
            holder = f"h{step}"
            assert await store.resource_request(name, holder, "x", weight=1.0, **args) == "holding"
        else:
            holder = got
            checked += 1
    assert checked > 30
    await store.close()
