"""``ack_and_lease``: a worker's acks and its next lease in one call, with the outcome of
``ack_many`` then ``lease``. On PostgreSQL the calls below take the one-statement path
(``ack_lease_fast``), which each test checks it did; SQLite runs the two verbs in turn."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.errors import StoreUnavailable
from corral.models import Ack, Lease, LeaseRef, RunSpec
from corral.store import Store, create_store
from tests.support.postgres import fresh_schema

TTL = 10.0


def spec(tenant: str = "acme") -> RunSpec:
    return RunSpec(agent="echo", tenant=tenant)


def count_statements(store: Store, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The hot statements ``store`` runs from now on, by name (which path a call took)."""
    seen: Counter[str] = Counter()
    original = store._hot_statement  # type: ignore[attr-defined]

    async def counting(name: str, params: Any) -> Any:
        seen[name] += 1
        return await original(name, params)

    monkeypatch.setattr(store, "_hot_statement", counting)
    return seen


@pytest.fixture
def statements(store: Store, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    return count_statements(store, monkeypatch)


@pytest.fixture
async def pg_store(pg_dsn: str) -> AsyncIterator[Store]:
    """An open PostgreSQL store on a fake clock (the one-statement path's own tests)."""
    with fresh_schema(pg_dsn) as dsn:
        store = create_store(dsn, StoreConfig(), FakeClock())
        await store.open()
        try:
            yield store
        finally:
            await store.close()


def took_one_statement(store: Store, statements: Counter[str]) -> bool:
    """True when the call ran as one statement, where the backend has it (PostgreSQL)."""
    if "ack_lease_fast" not in store.q:  # type: ignore[attr-defined]
        return True
    return statements["ack_lease_fast"] > 0


def acks_of(leases: list[Lease], result: object = None) -> list[Ack]:
    return [Ack(x.run_id, x.epoch, result) for x in leases]  # type: ignore[arg-type]


async def test_acks_then_leases_the_freed_slots(
    store: Store, clock: FakeClock, statements: Counter[str]
) -> None:
    ids = await store.submit([spec() for _ in range(5)])
    first = await store.lease("w", TTL, 2)
    clock.advance(0.5)
    done = await store.ack_and_lease(acks_of(first, {"ok": 1}), "w", TTL, 2)
    lost, leases = done.lost, done.leases
    assert done.unwritten == ()
    assert lost == frozenset()
    assert took_one_statement(store, statements)
    for lease in first:
        run = await store.get(lease.run_id)
        assert run is not None
        assert (run.status, run.result, run.finished_at) == ("succeeded", {"ok": 1}, clock.now)
    assert len(leases) == 2
    assert {x.run_id for x in leases}.isdisjoint(x.run_id for x in first)
    assert all(x.epoch == 1 and x.expires_at == clock.now + TTL for x in leases)
    assert len({x.run_id for x in first + leases} & set(ids)) == 4
    stats = await store.stats()
    acme = stats.tenant("acme")
    assert acme is not None
    assert (acme.queued, acme.in_flight, acme.succeeded) == (1, 2, 2)


async def test_a_stale_ack_is_refused_and_the_lease_goes_ahead(
    store: Store, clock: FakeClock, statements: Counter[str]
) -> None:
    await store.submit([spec()])
    (zombie,) = await store.lease("w1", TTL, 1)
    clock.advance(TTL + 1)
    (taken_over,) = await store.lease("w2", TTL, 1)  # the expired lease, redelivered
    assert taken_over.run_id == zombie.run_id and taken_over.epoch == zombie.epoch + 1
    await store.submit([spec(), spec()])
    done = await store.ack_and_lease(acks_of([zombie], "late"), "w1", TTL, 5)
    lost, leases = done.lost, done.leases
    assert done.unwritten == ()
    assert lost == {zombie.run_id}
    assert took_one_statement(store, statements)
    assert len(leases) == 2 and zombie.run_id not in {x.run_id for x in leases}
    run = await store.get(zombie.run_id)
    assert run is not None
    assert (run.status, run.result, run.lease_owner) == ("running", None, "w2")
    acme = (await store.stats()).tenant("acme")
    assert acme is not None and (acme.in_flight, acme.succeeded) == (3, 0)


async def test_a_tenant_the_ack_brings_below_its_cap_is_leased_in_the_same_call(
    store: Store, clock: FakeClock, statements: Counter[str]
) -> None:
    await store.set_tenant("capped", cap=2)
    await store.submit([spec("capped") for _ in range(6)])
    held = await store.lease("w", TTL, 5)
    assert len(held) == 2
    assert await store.lease("w", TTL, 5) == []
    done = await store.ack_and_lease(acks_of(held), "w", TTL, 5)
    lost, leases = done.lost, done.leases
    assert done.unwritten == ()
    assert lost == frozenset()
    assert took_one_statement(store, statements)
    assert [x.tenant for x in leases] == ["capped", "capped"]
    capped = (await store.stats()).tenant("capped")
    assert capped is not None and (capped.in_flight, capped.queued) == (2, 2)


async def test_the_freed_slots_go_by_fair_share(
    store: Store, clock: FakeClock, statements: Counter[str]
) -> None:
    """A quiet tenant's run comes before more of the busy tenant's, whose acks freed the
    slots: the ack counts the busy tenant's runs down but not its share of what it got."""
    await store.submit([spec("busy") for _ in range(20)])
    held = await store.lease("w", TTL, 4)
    await store.submit([spec("quiet")])
    done = await store.ack_and_lease(acks_of(held[:1]), "w", TTL, 1)
    lost, leases = done.lost, done.leases
    assert done.unwritten == ()
    assert lost == frozenset()
    assert took_one_statement(store, statements)
    assert [x.tenant for x in leases] == ["quiet"]


async def test_counters_match_the_rows_after_mixed_calls(
    store: Store, clock: FakeClock, statements: Counter[str]
) -> None:
    await store.set_tenant("b", cap=3)
    await store.submit([spec(t) for t in "aabbbc"] * 4)
    held = await store.lease("w", TTL, 6)
    for round_ in range(6):
        ended, held = held[: 2 + round_ % 3], held[2 + round_ % 3 :]
        clock.advance(0.1)
        more = await store.ack_and_lease(acks_of(ended), "w", TTL, len(ended) + 1)
        held += more.leases
    assert took_one_statement(store, statements)
    stats = await store.stats()
    for t in stats.tenants:
        runs = await store.list_runs(tenant=t.tenant, limit=1000)
        assert t.queued == sum(r.status == "queued" for r in runs), t
        assert t.in_flight == sum(r.status == "running" for r in runs), t
        assert t.succeeded == sum(r.status == "succeeded" for r in runs), t
        assert t.in_flight <= (3 if t.tenant == "b" else t.in_flight)


async def test_nothing_to_lease_still_acks(store: Store, statements: Counter[str]) -> None:
    await store.submit([spec()])
    held = await store.lease("w", TTL, 1)
    done = await store.ack_and_lease(acks_of(held), "w", TTL, 4)
    lost, leases = done.lost, done.leases
    assert done.unwritten == ()
    assert (lost, leases) == (frozenset(), [])
    run = await store.get(held[0].run_id)
    assert run is not None and run.status == "succeeded"


async def test_a_tenant_freed_from_its_cap_ranks_on_its_counters_after_the_ack(
    store: Store, clock: FakeClock, statements: Counter[str]
) -> None:
    """x holds its cap and has banked virtual time while capped; freed by the ack, it is
    lifted to the eligible tenants' floor (y's vtime) and then ranks behind y, which has
    fewer runs in flight per weight: y gets the one slot, as ack_many then lease gives it."""
    await store.set_tenant("x", cap=2)
    await store.set_tenant("y", weight=2.0)
    await store.submit([spec("x") for _ in range(5)])
    held_x = await store.lease("w1", TTL, 2)
    assert {h.tenant for h in held_x} == {"x"}
    clock.advance(0.1)
    await store.submit([spec("y") for _ in range(20)])
    held_y = await store.lease("w2", TTL, 3)
    assert {h.tenant for h in held_y} == {"y"}
    clock.advance(0.1)
    await store.ack_many(acks_of(held_y[:2]))
    clock.advance(0.1)
    statements.clear()
    done = await store.ack_and_lease(acks_of(held_x[:1]), "w1", TTL, 1)
    assert took_one_statement(store, statements)
    assert [x.tenant for x in done.leases] == ["y"]


async def spawn_child_and_wait(store: Store, tenant: str) -> Lease:
    """A parent of ``tenant`` waiting on one child, the child leased: the child's lease."""
    (parent_id,) = await store.submit([spec(tenant)])
    (parent,) = [x for x in await store.lease("w", TTL, 10) if x.run_id == parent_id]
    ref = LeaseRef(parent.run_id, parent.epoch)
    (child_id,) = await store.spawn(
        ref, [spec(tenant)], max_children=10, max_depth=5, entry=("spawned", "c", {})
    )
    assert await store.suspend(ref, children=[child_id], entry=("waiting", None, None))
    (child,) = [x for x in await store.lease("w", TTL, 10) if x.run_id == child_id]
    return child


async def test_an_ack_that_wakes_a_parent_frees_its_slot_for_the_same_lease(
    store: Store, clock: FakeClock
) -> None:
    await store.set_tenant("t", cap=1)
    child = await spawn_child_and_wait(store, "t")
    await store.submit([spec("t")])
    clock.advance(0.1)
    done = await store.ack_and_lease(acks_of([child], "child done"), "w", TTL, 1)
    assert done.lost == frozenset() and done.unwritten == ()
    assert len(done.leases) == 1  # the slot the child's ack freed, in the same call
    run = await store.get(child.run_id)
    assert run is not None and (run.status, run.result) == ("succeeded", "child done")
    t = (await store.stats()).tenant("t")
    assert t is not None and (t.in_flight, t.queued) == (1, 1)


async def test_leases_reach_the_caller_when_the_acks_after_them_fail(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the statement commits its acks and leases; a child's ack, written after
    it, fails. The leases are returned all the same, the unwritten ack with them."""
    store = pg_store
    child = await spawn_child_and_wait(store, "t")
    await store.submit([spec("u") for _ in range(3)])

    async def unavailable(acks: Any, now: float) -> frozenset[str]:
        raise StoreUnavailable("PostgreSQL: connection lost (injected)")

    statements = count_statements(store, monkeypatch)
    monkeypatch.setattr(store, "_ack_batch", unavailable)
    ack = Ack(child.run_id, child.epoch, "child done")
    done = await store.ack_and_lease([ack], "w", TTL, 2)
    assert statements["ack_lease_fast"] == 1
    assert [x.tenant for x in done.leases] == ["u", "u"]
    assert done.unwritten == (ack,) and done.lost == frozenset()
    leased = [await store.get(x.run_id) for x in done.leases]
    assert [(r.status, r.lease_owner) for r in leased if r] == [("running", "w")] * 2


async def test_with_no_acks_it_is_a_lease_with_the_same_bounds(store: Store) -> None:
    await store.submit([spec("heavy") for _ in range(10)])
    assert len(await store.lease("w", TTL, 2)) == 2
    # express slots: only tenants with fewer than 1 run in flight, and heavy has 2
    assert await store.lease("w", TTL, 5, light_below=1) == []
    done = await store.ack_and_lease([], "w", TTL, 5, light_below=1)
    assert (done.lost, done.leases, done.unwritten) == (frozenset(), [], ())
    heavy = (await store.stats()).tenant("heavy")
    assert heavy is not None and heavy.in_flight == 2


async def test_acks_written_before_a_failing_follow_up_lease_are_not_reported_unwritten(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a child's ack, written after the statement, lands; the lease of the slot
    it frees then fails. The statement's leases come back, and no ack is called unwritten."""
    store = pg_store
    child = await spawn_child_and_wait(store, "t")
    await store.submit([spec("u")])

    async def unavailable(*args: Any, **kw: Any) -> list[Lease]:
        raise StoreUnavailable("PostgreSQL: connection lost (injected)")

    monkeypatch.setattr(store, "_lease_general", unavailable)
    ack = Ack(child.run_id, child.epoch, "child done")
    done = await store.ack_and_lease([ack], "w", TTL, 3)
    assert [x.tenant for x in done.leases] == ["u"]
    assert done.unwritten == () and done.lost == frozenset()
    run = await store.get(child.run_id)
    assert run is not None and run.status == "succeeded"
