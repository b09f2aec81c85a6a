"""The store contract, run against every backend (SQLite and PostgreSQL) on a fake clock."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from corral.clock import FakeClock
from corral.config import PlanSpec, StoreConfig
from corral.errors import BackpressureError, LeaseLost, RunCancelled, RunNotFound
from corral.models import Ack, LeaseRef, RunSpec, RunStatus
from corral.store import Store, create_store
from tests.support.postgres import fresh_schema, until_blocked

TTL = 10.0


def spec(tenant: str = "acme", **kw: object) -> RunSpec:
    return RunSpec(agent=str(kw.pop("agent", "echo")), tenant=tenant, **kw)  # type: ignore[arg-type]


async def lease_one(store: Store, worker: str = "w1") -> LeaseRef:
    (lease,) = await store.lease(worker, TTL, 1)
    return LeaseRef(lease.run_id, lease.epoch)


async def test_submit_records_run_and_first_journal_entry(store: Store, clock: FakeClock) -> None:
    (run_id,) = await store.submit([spec(input={"x": 1}, priority=3, max_attempts=5)])
    run = await store.get(run_id)
    assert run is not None
    assert (run.status, run.input, run.priority, run.max_attempts) == ("queued", {"x": 1}, 3, 5)
    assert run.attempts == 0 and run.created_at == clock.now and run.started_at is None
    journal = await store.journal(run_id)
    assert [(e.seq, e.kind) for e in journal] == [(1, "submitted")]
    assert await store.get("no-such-run") is None


async def test_idempotency_key_is_per_tenant(store: Store) -> None:
    (a,) = await store.submit([spec(idempotency_key="k1", input=1)])
    (b,) = await store.submit([spec(idempotency_key="k1", input=2)])
    (c,) = await store.submit([spec("other", idempotency_key="k1")])
    assert a == b != c
    run = await store.get(a)
    assert run is not None and run.input == 1
    stats = await store.stats()
    assert stats.tenant("acme").queued == 1  # type: ignore[union-attr]


async def test_submit_many_is_one_transaction_under_quota(store: Store) -> None:
    await store.set_plan(PlanSpec("small", max_queued=3))
    await store.set_tenant("acme", plan="small")
    kept = await store.submit([spec(), spec()])
    with pytest.raises(BackpressureError):
        await store.submit([spec(), spec()])  # would make 4 > 3: none of the two is written
    assert len(await store.list_runs(tenant="acme")) == 2
    (third,) = await store.submit([spec()])
    assert set(kept) | {third} == {r.id for r in await store.list_runs(tenant="acme")}


async def test_not_before_delays_leasing(store: Store, clock: FakeClock) -> None:
    await store.submit([spec(not_before=clock.now + 30)])
    assert await store.lease("w", TTL, 10) == []
    clock.advance(31)
    assert len(await store.lease("w", TTL, 10)) == 1


async def test_lease_hands_out_each_run_once_with_an_epoch(store: Store, clock: FakeClock) -> None:
    ids = await store.submit([spec() for _ in range(5)])
    first = await store.lease("w1", TTL, 3)
    second = await store.lease("w2", TTL, 10)
    assert len(first) == 3 and len(second) == 2
    assert {x.run_id for x in first + second} == set(ids)
    assert all(
        x.epoch == 1 and x.attempt == 1 and x.expires_at == clock.now + TTL for x in first + second
    )
    run = await store.get(first[0].run_id)
    assert run is not None and run.status == "running" and run.lease_owner == "w1"
    assert await store.lease("w3", TTL, 10) == []


async def test_heartbeat_extends_and_stale_epoch_is_lease_lost(
    store: Store, clock: FakeClock
) -> None:
    await store.submit([spec()])
    ref = await lease_one(store)
    clock.advance(TTL - 1)
    assert await store.heartbeat(ref, TTL) is False
    clock.advance(TTL - 1)  # still alive thanks to the heartbeat
    assert await store.lease("w2", TTL, 1) == []
    with pytest.raises(LeaseLost):
        await store.heartbeat(LeaseRef(ref.run_id, ref.epoch + 1), TTL)


async def test_expired_lease_is_redelivered_and_zombie_writes_are_refused(
    store: Store, clock: FakeClock
) -> None:
    (run_id,) = await store.submit([spec()])
    zombie = await lease_one(store, "zombie")
    clock.advance(TTL + 0.1)
    # expired but not yet re-leased: the zombie still cannot write
    for late in (
        store.ack(zombie, "late"),
        store.heartbeat(zombie, TTL),
        store.append(zombie, [("event", "late", None)]),
        store.finish_cancelled(zombie),
    ):
        with pytest.raises(LeaseLost):
            await late
    (lease,) = await store.lease("w2", TTL, 1)
    assert lease.run_id == run_id and lease.epoch == zombie.epoch + 1 and lease.attempt == 2
    for write in (
        store.heartbeat(zombie, TTL),
        store.ack(zombie, "zombie"),
        store.fail(zombie, "x", retryable=True),
        store.release(zombie),
        store.append(zombie, [("event", "x", None)]),
        store.finish_cancelled(zombie),
    ):
        with pytest.raises(LeaseLost):
            await write
    await store.ack(LeaseRef(lease.run_id, lease.epoch), "ok")
    run = await store.get(run_id)
    assert run is not None and run.status == "succeeded" and run.result == "ok"
    # the expiry is in the journal (written by the store: epoch 0, like the submit's entry)
    journal = await store.journal(run_id)
    assert [(e.seq, e.kind, e.epoch) for e in journal] == [
        (1, "submitted", 0),
        (2, "lease_expired", 0),
    ]
    assert journal[1].data == {"attempt": 1, "epoch": zombie.epoch, "then": "queued"}


async def test_expired_leases_come_back_while_every_lease_is_busy(
    store: Store, clock: FakeClock
) -> None:
    """Reclaiming expired leases must not wait for an idle moment: leases that keep finding
    runs (on PostgreSQL the one-statement lease, which reclaims in the background) still
    bring expired ones back, within about a TTL."""
    (expired,) = await store.submit([spec()])
    zombie = await lease_one(store, "zombie")
    await store.submit([spec() for _ in range(100)])  # more than this test leases
    leased: dict[str, int] = {}
    for _ in range(40):  # 20 s of steady leasing, twice the TTL
        clock.advance(0.5)
        got = await store.lease("w2", 1000.0, 1)
        assert got, "a busy queue must keep handing out runs"
        leased.update((x.run_id, x.epoch) for x in got)
        if expired in leased:
            break
        await asyncio.sleep(0.005)  # background maintenance gets its turn
    assert leased.get(expired) == zombie.epoch + 1
    stats = await store.stats()
    assert stats.in_flight == len(leased) and stats.queued == 101 - len(leased)


async def test_ack_is_final(store: Store, clock: FakeClock) -> None:
    (run_id,) = await store.submit([spec()])
    ref = await lease_one(store)
    clock.advance(1)
    lost = await store.ack_many([Ack(ref.run_id, ref.epoch, {"answer": 42})])
    assert lost == frozenset()
    run = await store.get(run_id)
    assert run is not None
    assert (run.status, run.result, run.finished_at) == ("succeeded", {"answer": 42}, clock.now)
    assert await store.ack_many([Ack(ref.run_id, ref.epoch, 1)]) == {run_id}
    clock.advance(TTL * 5)
    assert await store.lease("w", TTL, 10) == []


async def test_retry_with_backoff_then_dead_letter(store: Store, clock: FakeClock) -> None:
    (run_id,) = await store.submit([spec(max_attempts=2)])
    ref = await lease_one(store)
    status = await store.fail(ref, {"message": "first"}, retryable=True, retry_at=clock.now + 5)
    assert status == RunStatus.QUEUED
    assert await store.lease("w", TTL, 1) == []  # backing off
    clock.advance(5)
    ref = await lease_one(store)
    status = await store.fail(ref, {"message": "second"}, retryable=True, retry_at=clock.now + 5)
    assert status == RunStatus.FAILED
    run = await store.get(run_id)
    assert run is not None
    assert (run.status, run.error, run.attempts) == ("failed", {"message": "second"}, 2)


async def test_non_retryable_failure_dead_letters_at_once(store: Store) -> None:
    (run_id,) = await store.submit([spec(max_attempts=5)])
    ref = await lease_one(store)
    assert await store.fail(ref, "bad input", retryable=False) == RunStatus.FAILED
    run = await store.get(run_id)
    assert run is not None and run.status == "failed" and run.error == "bad input"


async def test_lease_expiring_on_every_attempt_dead_letters(store: Store, clock: FakeClock) -> None:
    (run_id,) = await store.submit([spec(max_attempts=2)])
    for _ in range(2):
        await lease_one(store)
        clock.advance(TTL + 1)
    assert await store.lease("w", TTL, 1) == []
    run = await store.get(run_id)
    assert run is not None and run.status == "failed"
    assert run.error["type"] == "LeaseExpired"


async def test_release_gives_run_back_without_an_attempt(store: Store) -> None:
    (run_id,) = await store.submit([spec()])
    ref = await lease_one(store)
    await store.release(ref)
    (again,) = await store.lease("w2", TTL, 1)
    assert again.run_id == run_id and again.attempt == 1 and again.epoch == ref.epoch + 1
    with pytest.raises(LeaseLost):
        await store.ack(ref)


async def test_cancel_queued_running_and_unknown(store: Store, clock: FakeClock) -> None:
    queued, running = await store.submit([spec(priority=-1), spec(priority=5)])
    ref = await lease_one(store)
    assert ref.run_id == running
    cancelled = await store.cancel(queued)
    assert cancelled.status == "cancelled"
    assert await store.lease("w", TTL, 10) == []  # a cancelled queued run never starts
    flagged = await store.cancel(running)
    assert flagged.status == "running" and flagged.cancel_requested
    assert await store.heartbeat(ref, TTL) is True
    await store.finish_cancelled(ref)
    run = await store.get(running)
    assert run is not None and run.status == "cancelled"
    with pytest.raises(RunNotFound):
        await store.cancel("no-such-run")
    done = await store.cancel(running)  # cancelling an ended run changes nothing
    assert done.status == "cancelled"


async def test_cancelled_run_of_a_dead_worker_ends_cancelled(
    store: Store, clock: FakeClock
) -> None:
    (run_id,) = await store.submit([spec()])
    await lease_one(store)
    await store.cancel(run_id)
    clock.advance(TTL + 1)
    assert await store.lease("w", TTL, 1) == []
    run = await store.get(run_id)
    assert run is not None and run.status == "cancelled"


async def test_stats_per_tenant_and_total(store: Store, clock: FakeClock) -> None:
    await store.submit([spec("a"), spec("a"), spec("b")])
    clock.advance(4)
    await store.submit([spec("b")])
    (lease,) = await store.lease("w", TTL, 1)
    clock.advance(1)
    stats = await store.stats()
    a, b = stats.tenant("a"), stats.tenant("b")
    assert a is not None and b is not None
    assert stats.queued == 3 and stats.in_flight == 1 and stats.oldest_queued_age == 5
    leased_tenant = lease.tenant
    assert {a.in_flight, b.in_flight} == {0, 1}
    assert (a if leased_tenant == "a" else b).queued == 1
    assert b.oldest_queued_age == (5 if leased_tenant == "a" else 1)


async def test_tenant_caps_and_fair_allocation(store: Store) -> None:
    await store.set_tenant("capped", cap=2)
    await store.submit([spec("capped") for _ in range(10)] + [spec("quiet") for _ in range(2)])
    leases = await store.lease("w", TTL, 10)
    by_tenant = [x.tenant for x in leases]
    assert by_tenant.count("capped") == 2 and by_tenant.count("quiet") == 2
    assert await store.lease("w", TTL, 10) == []  # capped runs stay queued, not dropped
    capped = next(x for x in leases if x.tenant == "capped")
    await store.ack(LeaseRef(capped.run_id, capped.epoch))
    (nxt,) = await store.lease("w", TTL, 10)
    assert nxt.tenant == "capped"


async def test_one_lease_fills_from_many_tenants_in_each_ones_order(
    store: Store, clock: FakeClock
) -> None:
    """A lease spread over several tenants takes each one's runs in priority-then-age order,
    and a tenant with fewer due runs than its share leaves the rest to the others."""
    due = await store.submit([spec("brief")])
    await store.submit([spec("brief", not_before=clock.now + 60) for _ in range(5)])
    ids: dict[str, list[str]] = {t: [] for t in "xyz"}
    for i in range(6):
        for t in "xyz":
            ids[t] += await store.submit([spec(t, priority=i % 3)])
        clock.advance(0.01)
    leases = await store.lease("w", TTL, 10)
    assert len(leases) == 10
    mine = {t: [x.run_id for x in leases if x.tenant == t] for t in ("brief", *"xyz")}
    assert mine["brief"] == due
    assert sorted(len(mine[t]) for t in "xyz") == [3, 3, 3]
    for t in "xyz":
        # priorities 0,1,2,0,1,2 in submit order: the 2s first, then the 1s, oldest first
        expected = [ids[t][i] for i in (2, 5, 1, 4, 0, 3)][: len(mine[t])]
        assert mine[t] == expected, t


async def test_lease_prefers_tenant_furthest_below_share(store: Store) -> None:
    await store.submit([spec("noisy") for _ in range(50)])
    first = await store.lease("w", TTL, 8)
    assert all(x.tenant == "noisy" for x in first)
    await store.submit([spec("quiet")])
    (nxt,) = await store.lease("w", TTL, 1)
    assert nxt.tenant == "quiet"


async def test_global_cap(store: Store) -> None:
    await store.set_global_cap(3)
    await store.submit([spec(t) for t in "abcdef"])
    assert len(await store.lease("w", TTL, 10)) == 3
    assert await store.lease("w", TTL, 10) == []
    await store.set_global_cap(None)
    assert len(await store.lease("w", TTL, 10)) == 3


async def test_priority_then_age_within_tenant_with_aging(store: Store, clock: FakeClock) -> None:
    aging = store.config.priority_aging
    (old_low,) = await store.submit([spec(priority=0)])
    clock.advance(aging * 2.5)  # waiting 2.5 levels' worth
    high, mid = await store.submit([spec(priority=3), spec(priority=2)])
    order = [x.run_id for x in await store.lease("w", TTL, 3)]
    assert order.index(high) < order.index(old_low) < order.index(mid)


async def test_journal_append_is_ordered_and_readable_after(store: Store) -> None:
    (run_id,) = await store.submit([spec()])
    ref = await lease_one(store)
    assert (await store.append(ref, [("event", "a", 1), ("event", "b", {"k": 2})])).seqs == [2, 3]
    assert (await store.append(ref, [("event", "c", None)])).seqs == [4]
    entries = await store.journal(run_id, after=2)
    assert [(e.seq, e.name, e.data, e.epoch) for e in entries] == [
        (3, "b", {"k": 2}, ref.epoch),
        (4, "c", None, ref.epoch),
    ]


async def test_list_runs_filters_and_pages(store: Store) -> None:
    ids = await store.submit([spec("a"), spec("b", agent="other"), spec("a")])
    assert {r.id for r in await store.list_runs(tenant="a")} == {ids[0], ids[2]}
    assert [r.id for r in await store.list_runs(agent="other")] == [ids[1]]
    page1 = await store.list_runs(limit=2)
    page2 = await store.list_runs(limit=2, before=page1[-1].id)
    assert [r.id for r in page1 + page2] == sorted(ids, reverse=True)
    assert await store.list_runs(status="succeeded") == []


async def test_each_failed_attempt_is_journaled_and_success_clears_the_error(
    store: Store, clock: FakeClock
) -> None:
    (run_id,) = await store.submit([spec(max_attempts=3)])
    for attempt in (1, 2):
        ref = await lease_one(store)
        error = {"type": "RuntimeError", "message": f"try {attempt}"}
        assert await store.fail(ref, error, retryable=True) == RunStatus.QUEUED
        run = await store.get(run_id)
        assert run is not None and run.error == error
    ref = await lease_one(store)
    await store.ack(ref, "done")
    run = await store.get(run_id)
    assert run is not None and (run.status, run.result, run.error) == ("succeeded", "done", None)
    failed = [e for e in await store.journal(run_id) if e.kind == "attempt_failed"]
    assert [e.data for e in failed] == [
        {"attempt": n, "error": {"type": "RuntimeError", "message": f"try {n}"}} for n in (1, 2)
    ]
    assert [e.seq for e in await store.journal(run_id)] == [1, 2, 3]


async def test_tenant_counters_match_rows(store: Store, clock: FakeClock) -> None:
    """Every verb moves the tenant counters that caps and quotas rely on consistently."""
    await store.submit([spec(t) for t in "aabbbc"] * 3)
    leases = await store.lease("w", TTL, 7)
    refs = [LeaseRef(x.run_id, x.epoch) for x in leases]
    await store.ack(refs[0])
    await store.fail(refs[1], "x", retryable=True)
    await store.fail(refs[2], "x", retryable=False)
    await store.release(refs[3])
    await store.cancel(refs[4].run_id)
    await store.finish_cancelled(refs[4])
    queued = await store.list_runs(status="queued", limit=100)
    await store.cancel(queued[0].id)
    clock.advance(TTL + 1)
    await store.lease("w2", TTL, 2)  # reaps the two expired leases
    stats = await store.stats()
    for t in stats.tenants:
        runs = await store.list_runs(tenant=t.tenant, limit=1000)
        assert t.queued == sum(r.status == "queued" for r in runs), t
        assert t.in_flight == sum(r.status == "running" for r in runs), t


async def test_concurrent_open_migrates_once(db_url: str, clock: FakeClock) -> None:
    stores = [create_store(db_url, StoreConfig(), clock) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        (run_id,) = await stores[0].submit([spec()])
        assert (await stores[3].get(run_id)) is not None
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_cancellation_wins_over_suspend_release_and_retry(store: Store) -> None:
    ids = await store.submit([spec() for _ in range(3)])
    leases = await store.lease("w", TTL, 3)
    refs = {x.run_id: LeaseRef(x.run_id, x.epoch) for x in leases}
    for run_id in ids:
        await store.cancel(run_id)  # all three are running: flagged only
    with pytest.raises(RunCancelled):
        await store.suspend(refs[ids[0]], wake_at=store.clock() + 60, entry=("s", None, None))
    with pytest.raises(RunCancelled):
        await store.spawn(
            refs[ids[0]], [spec()], max_children=5, max_depth=3, entry=("spawn", "echo", {})
        )
    await store.release(refs[ids[1]])
    assert await store.fail(refs[ids[2]], "boom", retryable=True) == RunStatus.CANCELLED
    await store.finish_cancelled(refs[ids[0]])
    for run_id in ids:
        run = await store.get(run_id)
        assert run is not None and run.status == RunStatus.CANCELLED
    stats = await store.stats()
    assert stats.queued == 0 and stats.in_flight == 0


async def test_cancel_reaches_children_spawned_while_it_waited(
    pg_dsn: str, clock: FakeClock
) -> None:
    """A cancel that arrives while the parent's spawn is uncommitted cancels the children that
    spawn adds: they never run under a cancelled parent. (PostgreSQL: SQLite has one writer.)"""
    with fresh_schema(pg_dsn) as dsn:
        store = create_store(dsn, StoreConfig(), clock)
        await store.open()
        try:
            (parent,) = await store.submit([spec()])
            ref = await lease_one(store)
            async with (
                await psycopg.AsyncConnection.connect(dsn) as holder,
                await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher,
            ):
                # the spawn locks its parent, then stops at the tenant row held here
                await holder.execute(
                    "SELECT tenant FROM corral_tenants WHERE tenant = 'acme' FOR UPDATE"
                )
                spawning = asyncio.create_task(
                    store.spawn(
                        ref, [spec(), spec()], max_children=5, max_depth=3, entry=("s", "e", None)
                    )
                )
                await until_blocked(watcher, 1)
                cancelling = asyncio.create_task(store.cancel(parent))
                await until_blocked(watcher, 2)
                await holder.rollback()
                children = await asyncio.wait_for(spawning, 10)
                await asyncio.wait_for(cancelling, 10)
            assert not await store.lease("w2", TTL, 10)
            for child in children:
                run = await store.get(child)
                assert run is not None and run.status == RunStatus.CANCELLED, run
            stats = await store.stats()
            assert stats.queued == 0
        finally:
            await store.close()


async def test_an_idle_store_wakes_for_its_own_work_only(
    db_url: str, second_db_url: str, clock: FakeClock
) -> None:
    """Two corral databases side by side (on PostgreSQL, two schemas of one database, whose
    notifications are database-wide): work submitted to one does not wake the other's idle
    workers; work submitted to its own does, at once."""
    waiter = create_store(db_url, StoreConfig(), clock)
    own = create_store(db_url, StoreConfig(), clock)
    neighbour = create_store(second_db_url, StoreConfig(), clock)
    for s in (waiter, own, neighbour):
        await s.open()
    try:
        await waiter.wait_for_work(0.05)  # the listener is up
        waiting = asyncio.create_task(waiter.wait_for_work(10.0))
        await asyncio.sleep(0.1)
        await neighbour.submit([spec()])
        await asyncio.sleep(0.4)
        assert not waiting.done()
        await own.submit([spec()])
        await asyncio.wait_for(waiting, 3.0)
    finally:
        for s in (waiter, own, neighbour):
            await s.close()


async def test_stats_suggest_the_workers_the_load_needs(store: Store, clock: FakeClock) -> None:
    """The autoscaling signal from the store's own counters: a fresh backlog asks for little,
    one at the age target asks for a slot per runnable run (none for runs a cap holds back)."""
    await store.set_tenant("capped", cap=3)
    await store.submit([spec("busy") for _ in range(20)] + [spec("capped") for _ in range(10)])
    fresh = await store.stats()
    assert fresh.suggested_workers(age_target=30, slots_per_worker=4) == 1
    clock.advance(30)
    due = await store.stats()
    assert due.suggested_workers(age_target=30, slots_per_worker=4) == 6  # (20 + 3) / 4
    assert due.suggested_workers(age_target=30, slots_per_worker=4, max_workers=5) == 5
    assert due.suggested_workers(age_target=60, slots_per_worker=4) == 3  # half way: 10 + 2


async def test_runs_due_later_ask_for_no_slot_until_they_are_due(
    store: Store, clock: FakeClock
) -> None:
    """A backlog scheduled for later counted as runnable: one run due now, past the age
    target, made its tenant's 200 runs due tomorrow ask for 200 slots (50 workers)."""
    now = clock()
    await store.submit([spec(not_before=now + 86_400) for _ in range(200)] + [spec()])
    clock.advance(30)
    stats = await store.stats()
    assert stats.suggested_workers(age_target=30, slots_per_worker=4) == 1
    (acme,) = stats.tenants
    assert (acme.queued, acme.queued_later) == (201, 200)
    (lease,) = await store.lease("w1", TTL, 10)  # only the run due now is leasable
    await store.ack(LeaseRef(lease.run_id, lease.epoch))
    # due later only: still one worker, there when they come due (never scaled to zero)
    assert (await store.stats()).suggested_workers(age_target=30, slots_per_worker=4) == 1
    clock.advance(86_400 + 30)
    later = await store.stats()
    assert later.tenants[0].queued_later == 0
    assert later.suggested_workers(age_target=30, slots_per_worker=4) == 50
