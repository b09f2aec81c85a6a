"""A run submitted while a worker waits is handed to it: stored already leased, the lease
carried by a notification, so no second commit stands between accepting a run and starting it
(PostgreSQL; docs/architecture.md, "Handoff"). Handoffs must keep every rule a lease keeps:
tenant caps, order within a tenant, worker concurrency, fencing, and nothing for a worker that
died. SQLite hands nothing and says so."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import pytest

from corral import Corral, RunContext
from corral.config import StoreConfig
from corral.models import Lease, LeaseRef, RunSpec, RunStatus
from corral.store import Store, create_store
from tests.support.postgres import fresh_schema

pytestmark = pytest.mark.timeout(60)

TTL = 30.0


#: tenants the tests submit for. A tenant's first run takes the general path of submit,
#: which creates the tenant and hands nothing; the tests' tenants exist beforehand.
TENANTS = ("acme", "a", "b", "c", "capped", "busy", *(f"t{i}" for i in range(5)))


@asynccontextmanager
async def _two_stores(pg_dsn: str) -> AsyncIterator[tuple[str, Store, Store]]:
    """A fresh schema with the tests' tenants, a store that submits and another that waits
    (as two processes' would be: each its own connections and listening session)."""
    with fresh_schema(pg_dsn) as dsn:
        submitter, waiter = create_store(dsn), create_store(dsn)
        await submitter.open()
        await waiter.open()
        for tenant in TENANTS:
            await submitter.set_tenant(tenant)
        try:
            yield dsn, submitter, waiter
        finally:
            await waiter.close()
            await submitter.close()


async def _handed(store: Store, owner: str, n: int, timeout: float = 5.0) -> list[Lease]:
    """The first ``n`` runs handed to ``owner`` (fewer if ``timeout`` passes first)."""
    got: list[Lease] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < n and asyncio.get_running_loop().time() < deadline:
        got += store.take_handed(owner)
        if len(got) < n:
            await store.wait_for_work(0.05)
    return got


def _offer_rows(dsn: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            (r[0], r[1])
            for r in conn.execute("SELECT owner, slots FROM corral_idle_workers ORDER BY owner")
        ]


async def test_a_run_submitted_to_a_waiting_worker_arrives_leased(pg_dsn: str) -> None:
    async with _two_stores(pg_dsn) as (_, submitter, waiter):
        assert waiter.hands_off
        assert await waiter.offer_slots("w1", TTL, 2)
        (run_id,) = await submitter.submit([RunSpec("echo", {"x": [1, "two"]}, tenant="acme")])

        (lease,) = await _handed(waiter, "w1", 1)
        assert (lease.run_id, lease.epoch, lease.attempt) == (run_id, 1, 1)
        assert (lease.tenant, lease.agent, lease.input) == ("acme", "echo", {"x": [1, "two"]})
        assert lease.root_id == run_id and lease.parent_id is None and lease.journal_seq == 1
        run = await submitter.get(run_id)
        assert run is not None and run.status == RunStatus.RUNNING and run.attempts == 1
        acme = (await submitter.stats()).tenant("acme")
        assert acme is not None and (acme.queued, acme.in_flight) == (0, 1)
        assert (await submitter.delivery_counters()).handoffs == 1  # the corral_handoffs metric
        # nothing is left for a lease, and the lease handed over is a real, fenced one
        assert await submitter.lease("other", TTL, 10) == []
        assert not await waiter.heartbeat(LeaseRef(run_id, 1), TTL)  # no cancel asked
        await waiter.ack(LeaseRef(run_id, 1), {"ok": True})
        done = await submitter.get(run_id)
        assert done is not None and done.status == RunStatus.SUCCEEDED
        assert done.result == {"ok": True}


async def test_an_offer_takes_only_as_many_runs_as_it_has_slots(pg_dsn: str) -> None:
    async with _two_stores(pg_dsn) as (dsn, submitter, waiter):
        await waiter.offer_slots("w1", TTL, 2)
        ids = [(await submitter.submit([RunSpec("echo", tenant=f"t{i}")]))[0] for i in range(3)]
        handed = await _handed(waiter, "w1", 2)
        assert [x.run_id for x in handed] == ids[:2]
        assert _offer_rows(dsn) == [("w1", 0)]
        assert (await submitter.delivery_counters()).handoffs == 2
        third = await submitter.get(ids[2])
        assert third is not None and third.status == RunStatus.QUEUED
        # a lease the worker takes itself counts against its offer too
        await waiter.offer_slots("w1", TTL, 3)
        (leased,) = await waiter.lease("w1", TTL, 3)
        assert leased.run_id == ids[2]
        assert _offer_rows(dsn) == [("w1", 2)]


async def test_a_handoff_keeps_the_tenant_cap_and_the_order_within_a_tenant(
    pg_dsn: str,
) -> None:
    async with _two_stores(pg_dsn) as (_, submitter, waiter):
        await submitter.set_tenant("capped", cap=1)
        await waiter.offer_slots("w1", TTL, 10)
        first = (await submitter.submit([RunSpec("echo", tenant="capped")]))[0]
        second = (await submitter.submit([RunSpec("echo", tenant="capped")]))[0]
        (handed,) = await _handed(waiter, "w1", 1)
        assert handed.run_id == first
        assert await _handed(waiter, "w1", 1, timeout=0.3) == []  # at its cap: it waits
        # an older queued run of a tenant goes before its newer one: no handoff past it
        await submitter.submit([RunSpec("echo", tenant="busy")] * 2)
        await submitter.submit([RunSpec("echo", tenant="busy")])
        await asyncio.sleep(0.3)
        # (the first two went in one transaction: the general path, never handed)
        assert [x.tenant for x in waiter.take_handed("w1")] == []
        stats = await submitter.stats()
        busy, capped = stats.tenant("busy"), stats.tenant("capped")
        assert busy is not None and (busy.queued, busy.in_flight) == (3, 0)
        assert capped is not None and (capped.queued, capped.in_flight) == (1, 1)
        run = await submitter.get(second)
        assert run is not None and run.status == RunStatus.QUEUED


async def test_a_run_due_later_or_under_a_global_cap_is_not_handed(pg_dsn: str) -> None:
    async with _two_stores(pg_dsn) as (_, submitter, waiter):
        await waiter.offer_slots("w1", TTL, 10)
        later = (await submitter.submit([RunSpec("echo", tenant="a", not_before=9e9)]))[0]
        await submitter.set_global_cap(100)
        capped = (await submitter.submit([RunSpec("echo", tenant="b")]))[0]
        await asyncio.sleep(0.3)
        assert waiter.take_handed("w1") == []
        for run_id in (later, capped):
            run = await submitter.get(run_id)
            assert run is not None and run.status == RunStatus.QUEUED
        await submitter.set_global_cap(None)
        handed = (await submitter.submit([RunSpec("echo", tenant="c")]))[0]
        assert [x.run_id for x in await _handed(waiter, "w1", 1)] == [handed]


async def test_an_input_too_large_for_a_notification_is_queued_instead(pg_dsn: str) -> None:
    async with _two_stores(pg_dsn) as (_, submitter, waiter):
        await waiter.offer_slots("w1", TTL, 10)
        big = {"text": "\u00e9" * 5000}  # 10,000 bytes of UTF-8
        (run_id,) = await submitter.submit([RunSpec("echo", big, tenant="a")])
        await asyncio.sleep(0.3)
        assert waiter.take_handed("w1") == []
        (lease,) = await submitter.lease("other", TTL, 1)
        assert lease.run_id == run_id and lease.input == big


async def test_an_offer_not_renewed_within_its_lifetime_is_handed_nothing(pg_dsn: str) -> None:
    with fresh_schema(pg_dsn) as dsn:
        config = StoreConfig(offer_lifetime=0.5)
        submitter, waiter = create_store(dsn, config), create_store(dsn, config)
        await submitter.open()
        await waiter.open()
        try:
            for tenant in TENANTS:
                await submitter.set_tenant(tenant)
            assert not await waiter.renew_offer("w1")  # no offer to renew
            await waiter.offer_slots("w1", TTL, 5)
            await asyncio.sleep(0.7)
            (stale,) = await submitter.submit([RunSpec("echo", tenant="a")])
            run = await submitter.get(stale)
            assert run is not None and run.status == RunStatus.QUEUED
            assert waiter.take_handed("w1") == []
            # renewed, it stands again, with the slots it had
            assert await waiter.renew_offer("w1")
            assert _offer_rows(dsn) == [("w1", 5)]
            (fresh,) = await submitter.submit([RunSpec("echo", tenant="b")])
            assert [x.run_id for x in await _handed(waiter, "w1", 1)] == [fresh]
            assert _offer_rows(dsn) == [("w1", 4)]
        finally:
            await waiter.close()
            await submitter.close()


#: a worker process whose offer must be renewed every 0.6 s
WAITING_WORKER = """
import asyncio, sys
from corral import Corral
from corral.config import StoreConfig

app = Corral(sys.argv[1], config=StoreConfig(offer_lifetime=0.6))

@app.agent("echo")
async def echo(ctx, input):
    return input

async def main():
    async with app:
        worker = app.worker(concurrency=2, poll_interval=30.0)  # wake-ups and renewals only
        worker.install_signal_handlers()
        print(worker.worker_id, flush=True)
        await worker.run()

asyncio.run(main())
"""


@contextmanager
def _python(script: str, dsn: str) -> Iterator[subprocess.Popen[str]]:
    """``script`` run by a Python process of its own, given ``dsn``; its stdout piped."""
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), dsn],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    ) as proc:
        yield proc


async def test_a_frozen_workers_offer_lapses_and_its_runs_are_leased_by_others(
    pg_dsn: str,
) -> None:
    """SIGSTOP leaves a worker's process, session and advisory lock alive: only the offer's
    lifetime keeps submits from handing it runs it cannot start. A running worker keeps its
    offer standing well past that lifetime by renewing it."""
    with fresh_schema(pg_dsn) as dsn, _python(WAITING_WORKER, dsn) as proc:
        try:
            assert proc.stdout is not None
            worker_id = proc.stdout.readline().strip()
            async with Corral(dsn, config=StoreConfig(offer_lifetime=0.6)) as client:
                for tenant in TENANTS:
                    await client.set_tenant(tenant)
                await _until(lambda: _offer_rows(dsn) == [(worker_id, 2)])
                await asyncio.sleep(1.5)  # past the lifetime: the worker has renewed it
                handed = await client.submit("echo", 1, tenant="a")
                run = await client.wait(handed, timeout=10)
                assert run.status == RunStatus.SUCCEEDED and run.attempts == 1
                assert (await client.store.delivery_counters()).handoffs == 1
                await _until(lambda: _offer_rows(dsn) == [(worker_id, 2)])

                proc.send_signal(signal.SIGSTOP)
                await asyncio.sleep(1.0)
                queued = await client.submit("echo", 2, tenant="b")
                run = await client.get(queued)
                assert run.status == RunStatus.QUEUED and run.attempts == 0
                assert (await client.store.delivery_counters()).handoffs == 1
                (lease,) = await client.store.lease("alive", TTL, 1)
                assert lease.run_id == queued and lease.attempt == 1
                await client.store.ack(LeaseRef(lease.run_id, lease.epoch), 2)
        finally:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(15) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()


OFFER_AND_HANG = """
import asyncio, sys
from corral.store import create_store

async def main():
    store = create_store(sys.argv[1])
    await store.open()
    assert await store.offer_slots("doomed", 30.0, 5)
    print("offered", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def _offer_in_a_process_then_kill_it(dsn: str) -> None:
    with _python(OFFER_AND_HANG, dsn) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "offered"
            assert _offer_rows(dsn) == [("doomed", 5)]
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_a_killed_workers_offer_is_never_used(pg_dsn: str) -> None:
    async with _two_stores(pg_dsn) as (dsn, submitter, _):
        _offer_in_a_process_then_kill_it(dsn)
        await asyncio.sleep(0.2)  # the server notices the closed session
        (run_id,) = await submitter.submit([RunSpec("echo", tenant="a")])
        run = await submitter.get(run_id)
        assert run is not None and run.status == RunStatus.QUEUED
        (lease,) = await submitter.lease("alive", TTL, 1)
        assert lease.run_id == run_id
        # a lease's maintenance forgets the dead offer
        for _ in range(20):
            await asyncio.sleep(0.3)
            await submitter.lease("alive", TTL, 1)
            if not _offer_rows(dsn):
                break
        assert _offer_rows(dsn) == []


async def test_an_offer_lapses_with_its_listening_session_and_returns_with_it(
    pg_dsn: str,
) -> None:
    async with _two_stores(pg_dsn) as (dsn, submitter, waiter):
        await waiter.offer_slots("w1", TTL, 5)
        with psycopg.connect(dsn, autocommit=True) as conn:
            # the one session holding an advisory lock: the waiting store's listener (in this
            # database: the server may serve others' too)
            (killed,) = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND mode = 'ExclusiveLock' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
            assert killed == (True,)
        await asyncio.sleep(0.2)
        (queued,) = await submitter.submit([RunSpec("echo", tenant="a")])
        run = await submitter.get(queued)
        assert run is not None and run.status == RunStatus.QUEUED  # no lock: nothing handed
        await waiter.wait_for_work(0.5)  # notices the lost session; the next wait reconnects
        await waiter.wait_for_work(0.1)
        assert _offer_rows(dsn) == [("w1", 5)]
        (handed,) = await submitter.submit([RunSpec("echo", tenant="b")])
        assert [x.run_id for x in await _handed(waiter, "w1", 1)] == [handed]


async def test_sqlite_hands_nothing(tmp_path: Any) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'corral.db'}")
    await store.open()
    try:
        assert not store.hands_off
        assert not await store.offer_slots("w1", TTL, 4)
        await store.submit([RunSpec("echo")])
        assert store.take_handed("w1") == []
        assert len(await store.lease("w1", TTL, 4)) == 1
    finally:
        await store.close()


# ------------------------------------------------------------------------------- workers


class _CountingLeases:
    """The worker's store, counting the runs that came by lease (the rest were handed)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.leased = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def lease(self, *args: Any, **kwargs: Any) -> list[Lease]:
        got: list[Lease] = await self._store.lease(*args, **kwargs)
        self.leased += len(got)
        return got


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_a_waiting_worker_runs_handed_runs_and_withdraws_its_offer_on_stop(
    pg_dsn: str,
) -> None:
    with fresh_schema(pg_dsn) as dsn:
        app = Corral(dsn)
        done: list[int] = []

        @app.agent("echo")
        async def echo(ctx: RunContext, input: Any) -> Any:
            await asyncio.sleep(0.05)  # the worker offers its 3 other slots meanwhile
            done.append(input)
            return input

        async with app, Corral(dsn) as client:
            for tenant in TENANTS:
                await client.set_tenant(tenant)
            counting = _CountingLeases(app.store)
            worker = app.worker(concurrency=4, poll_interval=30.0)  # wake-ups only
            worker.store = counting  # type: ignore[assignment]
            task = asyncio.create_task(worker.run())
            await _until(lambda: _offer_rows(dsn) == [(worker.worker_id, 4)])
            ids = []
            for i in range(5):
                # the run's ack wakes the worker, which puts its slot back on offer (a submit
                # racing that write skips the row it locks and its run is leased: correct, but
                # not what this test looks at)
                await _until(
                    lambda: worker.in_flight == 0 and _offer_rows(dsn) == [(worker.worker_id, 4)]
                )
                ids.append(await client.submit("echo", i, tenant=f"t{i}"))
                await _until(lambda: len(done) == len(ids))
            runs = [await client.wait(run_id, timeout=10) for run_id in ids]
            assert [r.result for r in runs] == [0, 1, 2, 3, 4]
            assert counting.leased == 0  # every one was handed
            worker.stop()
            await asyncio.wait_for(task, 10)
            assert _offer_rows(dsn) == []
            after = await client.submit("echo", 9)
            run = await client.get(after)
            assert run.status == RunStatus.QUEUED


async def test_a_run_handed_to_a_full_worker_is_given_back_without_an_attempt(
    pg_dsn: str,
) -> None:
    """A handoff that crosses the worker's own lease finds no free slot: the worker gives
    the run back (an attempt not counted) and stays within its concurrency."""
    with fresh_schema(pg_dsn) as dsn:
        app = Corral(dsn)
        release = asyncio.Event()
        running = 0
        most = 0

        @app.agent("hold")
        async def hold(ctx: RunContext, input: Any) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await release.wait()
            finally:
                running -= 1

        async with app, Corral(dsn) as client:
            for tenant in TENANTS:
                await client.set_tenant(tenant)
            worker = app.worker(concurrency=1, poll_interval=0.1)
            task = asyncio.create_task(worker.run())
            first = await client.submit("hold", tenant="a")
            await _until(lambda: running == 1)
            # what a handoff racing a lease leaves: an offer larger than the free slots
            assert await app.store.offer_slots(worker.worker_id, TTL, 3)
            second = await client.submit("hold", tenant="b")
            await _until(lambda: _offer_rows(dsn) == [(worker.worker_id, 2)])
            await asyncio.sleep(0.3)
            assert running == 1 and worker.in_flight == 1
            given_back = await client.get(second)
            assert given_back.status == RunStatus.QUEUED and given_back.attempts == 0
            release.set()
            for run_id in (first, second):
                run = await client.wait(run_id, timeout=10)
                assert run.status == RunStatus.SUCCEEDED and run.attempts == 1
            worker.stop()
            await asyncio.wait_for(task, 10)
        assert most == 1


async def test_a_run_handed_back_unstarted_is_still_held_to_its_start_within(
    pg_dsn: str,
) -> None:
    """A run a full worker gives back was never started: past its start_within it ends
    RunExpired, its agent never called, as a run leased and never handed does."""
    with fresh_schema(pg_dsn) as dsn:
        app = Corral(dsn)
        release = asyncio.Event()
        calls: list[Any] = []

        @app.agent("hold")
        async def hold(ctx: RunContext, input: Any) -> None:
            calls.append(input)
            await release.wait()

        async with app, Corral(dsn) as client:
            for tenant in TENANTS:
                await client.set_tenant(tenant)
            worker = app.worker(concurrency=1, poll_interval=0.1)
            task = asyncio.create_task(worker.run())
            try:
                first = await client.submit("hold", "first", tenant="a")
                await _until(lambda: calls == ["first"])
                # an offer larger than the free slots (a handoff that crossed a lease)
                assert await app.store.offer_slots(worker.worker_id, TTL, 3)
                late = await client.submit("hold", "late", tenant="b", start_within=0.5)
                await _until(lambda: _offer_rows(dsn) == [(worker.worker_id, 2)])
                for _ in range(100):  # given back
                    if (await client.get(late)).status == RunStatus.QUEUED:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.6)  # its limit passes while it waits
                release.set()
                assert (await client.wait(first, timeout=10)).status == RunStatus.SUCCEEDED
                expired = await client.wait(late, timeout=10)
            finally:
                release.set()
                worker.stop()
                await asyncio.wait_for(task, 10)
        assert expired.status == RunStatus.FAILED and expired.error["type"] == "RunExpired"
        assert calls == ["first"]


async def test_a_worker_with_handoffs_off_makes_no_offer_and_leases(pg_dsn: str) -> None:
    with fresh_schema(pg_dsn) as dsn:
        app = Corral(dsn)

        @app.agent("echo")
        async def echo(ctx: RunContext, input: Any) -> Any:
            return input

        async with app, Corral(dsn) as client:
            await client.set_tenant("a")
            counting = _CountingLeases(app.store)
            worker = app.worker(concurrency=4, poll_interval=0.05, handoffs=False)
            worker.store = counting  # type: ignore[assignment]
            task = asyncio.create_task(worker.run())
            await asyncio.sleep(0.3)  # waiting, with polls in between
            assert _offer_rows(dsn) == []
            run_id = await client.submit("echo", 7, tenant="a")
            assert (await client.wait(run_id, timeout=10)).result == 7
            assert counting.leased == 1
            worker.stop()
            await asyncio.wait_for(task, 10)


def _advisory_locks(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
        ).fetchone()
        assert row is not None
        return int(row[0])


async def test_a_stopped_worker_leaves_no_channel_or_lock_behind(pg_dsn: str) -> None:
    """A process that starts and stops workers one after another keeps no session lock or
    channel of the stopped ones: piled up, they would fill the server's shared lock table.
    The workers after them are still handed runs."""
    async with _two_stores(pg_dsn) as (dsn, submitter, waiter):
        app = Corral(dsn, store=waiter)
        started: list[str] = []

        @app.agent("echo")
        async def echo(ctx: RunContext, input: Any) -> Any:
            started.append(ctx.run_id)
            return input

        before = _advisory_locks(dsn)
        for i in range(4):
            worker = app.worker(concurrency=2, poll_interval=0.05)
            running = asyncio.create_task(worker.run())
            try:
                await _until(lambda w=worker: _offer_rows(dsn) == [(w.worker_id, 2)])
                assert _advisory_locks(dsn) == before + 1
                (run_id,) = await submitter.submit([RunSpec("echo", {"i": i}, tenant="acme")])
                await _until(lambda r=run_id: r in started)
            finally:
                worker.stop()
                await running
            assert _advisory_locks(dsn) == before
        assert len(started) == 4
        counters = await submitter.stats()
        assert counters.in_flight == 0
