"""The shared contention scheduler across real processes, on both backends: capacity holds
for all of them together, a killed holder's slot comes back, a token-per-minute limit holds
in every window."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from corral.api.metrics import ServiceMetrics
from corral.api.settings import ApiSettings
from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.contention.shared import SharedScheduler
from corral.errors import BackpressureError, InvalidInput, ShutdownError
from corral.store import Store, create_store, parse_database_url
from corral.values import MAX_INT

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


def client(url: str, name: str, capacity: int, mode: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.shared_client",
            url,
            name,
            str(capacity),
            mode,
            str(count),
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def holders(url: str, name: str) -> int:
    parsed = parse_database_url(url)
    sql = "SELECT COUNT(*) FROM corral_resource_requests WHERE resource = ? AND state = 'holding'"
    if parsed.dialect == "sqlite":
        with sqlite3.connect(parsed.target, timeout=30) as conn:
            return int(conn.execute(sql, (name,)).fetchone()[0])
    with psycopg.connect(parsed.target) as conn:
        row = conn.execute(sql.replace("?", "%s"), (name,)).fetchone()
        assert row is not None
        return int(row[0])


async def test_capacity_holds_across_four_processes(db_url: str) -> None:
    store = create_store(db_url)
    await store.open()
    await store.close()  # migrated; the clients define the resource
    procs = [client(db_url, "llm", 3, "churn", 6) for _ in range(4)]
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            # the table may not exist for the first few ms
            with contextlib.suppress(sqlite3.OperationalError, psycopg.Error):
                seen.append(holders(db_url, "llm"))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        stop.set()
        sampler.join()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0 and "done" in out, err
    assert len(seen) > 200
    assert max(seen) == 3  # reached, never exceeded
    assert holders(db_url, "llm") == 0


async def test_a_killed_holders_slot_comes_back_within_the_ttl(db_url: str) -> None:
    store = create_store(db_url)
    await store.open()
    holder = client(db_url, "gpu", 1, "hold", 1)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        gpu = SharedScheduler(store, "gpu", capacity=1, lease_ttl=1.0, poll_interval=0.01)
        await gpu.open()
        waiter = asyncio.create_task(gpu.acquire_start("me"))
        await asyncio.sleep(0.3)
        assert not waiter.done()  # the other process holds the only slot
        holder.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        handle = await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - killed < 1.0 + 0.5  # the TTL, plus polling
        await gpu.release_handle(handle)
        await gpu.close()
    finally:
        holder.kill()
        holder.communicate()
        await store.close()


def usage_rows(url: str, name: str) -> dict[str, tuple[float, int]]:
    parsed = parse_database_url(url)
    sql = "SELECT request_id, at, tokens FROM corral_resource_usage WHERE resource = ?"
    if parsed.dialect == "sqlite":
        with sqlite3.connect(parsed.target, timeout=30) as conn:
            rows = conn.execute(sql, (name,)).fetchall()
    else:
        with psycopg.connect(parsed.target) as conn:
            rows = conn.execute(sql.replace("?", "%s"), (name,)).fetchall()
    return {str(r[0]): (float(r[1]), int(r[2])) for r in rows}


async def test_tokens_per_minute_hold_in_every_window(db_url: str) -> None:
    clock = FakeClock()
    store = create_store(db_url, StoreConfig(), clock)
    await store.open()
    # two schedulers on one store stand for two processes
    a, b = (
        SharedScheduler(
            store,
            "tpm",
            capacity=4,
            tpm=1000,
            lease_ttl=3600,
            poll_interval=0.005,
            max_waiters=1000,
        )
        for _ in range(2)
    )
    await a.open()
    await b.open()

    async def call(scheduler: SharedScheduler, i: int) -> None:
        async with scheduler.acquire(f"agent-{i % 3}", tokens=150) as handle:
            await asyncio.sleep(0)
            handle.report_usage(100 + i % 50)  # settle below the reservation

    tasks = [asyncio.create_task(call(a if i % 2 else b, i)) for i in range(40)]
    seen: dict[str, tuple[float, int]] = {}  # every grant the store recorded: (time, tokens)
    for _ in range(300):
        await asyncio.sleep(0.02)
        seen.update(usage_rows(db_url, "tpm"))
        if all(t.done() for t in tasks):
            break
        clock.advance(7.0)  # a minute passes in ~9 steps
    await asyncio.gather(*tasks)
    seen.update(usage_rows(db_url, "tpm"))
    assert (await store.resource_snapshot("tpm")).holders == 0
    assert len(seen) == 40
    grants = sorted(seen.values())
    for start, _ in grants:  # every 60 s window that starts at a grant
        in_window = [n for t, n in grants if start <= t < start + 60.0]
        assert sum(in_window) <= 1000, (start, in_window)
    # the limit was the binding constraint: some window was nearly full
    assert max(sum(n for t, n in grants if s <= t < s + 60.0) for s, _ in grants) > 600
    await a.close()
    await b.close()
    await store.close()


async def test_backpressure_and_report_throttled(db_url: str) -> None:
    clock = FakeClock()
    store = create_store(db_url, StoreConfig(), clock)
    await store.open()
    llm = SharedScheduler(
        store, "bp", capacity=1, max_waiters=2, lease_ttl=3600, poll_interval=0.005
    )
    await llm.open()
    first = await llm.acquire_start("a")
    waiters = [asyncio.create_task(llm.acquire_start("b")) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(BackpressureError):
        await llm.acquire_start("c")
    await llm.report_throttled(30)  # the provider said 429: nobody is granted for 30 s
    await llm.release_handle(first)
    await asyncio.sleep(0.1)
    assert not any(w.done() for w in waiters)
    clock.advance(31)
    granted = await asyncio.wait_for(waiters[0], 5)
    await llm.release_handle(granted)
    await llm.release_handle(await asyncio.wait_for(waiters[1], 5))
    await llm.close()
    await store.close()


async def test_a_hold_that_expired_while_in_use_is_taken_back(db_url: str) -> None:
    """A's renewals are held up past its TTL: B's poll drops A's hold and grants B's waiter.
    A still uses the slot, so it takes its hold back: two holders on a capacity of 1, and
    nothing more is granted until both have released."""
    async with lapsing_and_lasting(db_url, "held") as (clock, store, a, b):
        held = await a.acquire_start("a")
        first_b = asyncio.create_task(b.acquire_start("b1"))
        await asyncio.sleep(0.05)
        assert not first_b.done()
        clock.advance(1.0)  # A's hold expires: its process renewed nothing in that time
        granted_b = await asyncio.wait_for(first_b, 5)
        for _ in range(500):
            if a.reclaims:
                break
            await asyncio.sleep(0.01)
        assert a.reclaims == 1
        assert (await store.resource_snapshot("held")).holders == 2
        metrics = ServiceMetrics(store, ApiSettings(), {"held": a})
        await metrics.exposition()  # an operator sees it on /metrics, not only in a log line
        reclaimed = {"scheduler": "held"}
        assert metrics.registry.get_sample_value("corral_scheduler_reclaims_total", reclaimed) == 1
        second_b = asyncio.create_task(b.acquire_start("b2"))
        await asyncio.sleep(0.2)
        await a.release_handle(held)
        await asyncio.sleep(0.2)
        assert not second_b.done()  # B's first request still holds the one slot
        await b.release_handle(granted_b)
        await b.release_handle(await asyncio.wait_for(second_b, 5))
        assert (await store.resource_snapshot("held")).holders == 0


@contextlib.asynccontextmanager
async def one_scheduler(
    db_url: str, name: str, clock: FakeClock | None = None, **options: Any
) -> AsyncIterator[tuple[Store, SharedScheduler]]:
    """An open store and an open SharedScheduler of resource ``name`` on it (capacity 1, a
    lease of an hour, unless ``options`` say otherwise); both closed afterwards."""
    store = create_store(db_url, StoreConfig(), clock or FakeClock())
    await store.open()
    llm = SharedScheduler(store, name, **{"capacity": 1, "lease_ttl": 3600, **options})
    try:
        await llm.open()
        yield store, llm
    finally:
        await llm.close()
        await store.close()


@contextlib.asynccontextmanager
async def lapsing_and_lasting(
    db_url: str, name: str
) -> AsyncIterator[tuple[FakeClock, Store, SharedScheduler, SharedScheduler]]:
    """Two processes' open SharedSchedulers of resource ``name`` (capacity 1) on one store on a
    fake clock: A's holds lapse 0.6 s of store time after their last renewal, B's after an
    hour. All three closed afterwards."""
    clock = FakeClock()
    store = create_store(db_url, StoreConfig(), clock)
    await store.open()
    a = SharedScheduler(store, name, capacity=1, lease_ttl=0.6, poll_interval=0.005)
    b = SharedScheduler(store, name, capacity=1, lease_ttl=3600, poll_interval=0.005)
    try:
        await a.open()
        await b.open()
        yield clock, store, a, b
    finally:
        await a.close()
        await b.close()
        await store.close()


async def test_an_acquire_that_races_close_gets_shutdown_error(db_url: str) -> None:
    """close() while an acquire is writing its request: the request used to be queued after
    close had withdrawn this process's waiters and stopped polling, and waited for ever."""
    async with one_scheduler(db_url, "closing", poll_interval=0.005) as (store, llm):
        held = await llm.acquire_start("a")
        late = asyncio.create_task(llm.acquire_start("b"))
        await asyncio.sleep(0)  # it is writing its request now
        await llm.close()
        with pytest.raises(ShutdownError):
            await asyncio.wait_for(late, 10)
        await llm.release_handle(held)
        snapshot = await store.resource_snapshot("closing")
        assert (snapshot.holders, snapshot.waiting) == (0, {})


async def test_usage_beyond_the_largest_token_count_is_refused_where_it_is_reported(
    db_url: str,
) -> None:
    """report_usage took any int; on PostgreSQL the release that settled more than the
    tokens column holds failed with the driver's error and left the slot held."""
    async with one_scheduler(db_url, "usage", tpm=MAX_INT) as (store, llm):
        async with llm.acquire("a", tokens=10) as handle:
            with pytest.raises(InvalidInput, match="usage"):
                handle.report_usage(MAX_INT + 1)
            handle.report_usage(MAX_INT)
        snapshot = await store.resource_snapshot("usage")
        assert (snapshot.holders, snapshot.tokens_in_window) == (0, MAX_INT)


async def test_a_pause_for_ever_is_refused(db_url: str) -> None:
    """report_throttled(inf) was stored as every process's pause, which is only ever
    lengthened: the resource granted nothing again, even after restarts."""
    clock = FakeClock()
    async with one_scheduler(db_url, "paused", clock, poll_interval=0.005) as (store, llm):
        for bad in (float("inf"), float("nan"), "30"):
            with pytest.raises(InvalidInput, match="retry_after"):
                await llm.report_throttled(bad)  # type: ignore[arg-type]
        assert (await store.resource_snapshot("paused")).paused_until < clock()
        await llm.release_handle(await asyncio.wait_for(llm.acquire_start("a"), 10))


async def test_a_nan_timeout_is_refused(db_url: str) -> None:
    """A NaN timeout used to be queued: it never came due, and the request waited on."""
    async with one_scheduler(db_url, "nan", poll_interval=0.005) as (store, llm):
        held = await llm.acquire_start("a")
        with pytest.raises(InvalidInput, match="timeout"):
            await asyncio.wait_for(llm.acquire_start("b", timeout=float("nan")), 10)
        assert (await store.resource_snapshot("nan")).waiting == {}
        await llm.release_handle(held)


async def test_a_hold_outlasting_close_is_still_renewed_until_released(db_url: str) -> None:
    """close() let holders finish but stopped renewing their holds: one used for longer than
    the lease TTL after it lapsed, and the slot went to another process's waiter while the
    provider was still being called (two holders on a capacity of 1)."""
    async with lapsing_and_lasting(db_url, "closing") as (clock, store, a, b):
        held = await a.acquire_start("a")
        await a.close()
        waiting = asyncio.create_task(b.acquire_start("b"))
        for _ in range(8):  # 2.4 s of store time, four lease TTLs, while A still holds
            clock.advance(0.3)
            await asyncio.sleep(0.3)  # A renews every TTL/3 = 0.2 s
        assert not waiting.done() and a.reclaims == 0
        assert (await store.resource_snapshot("closing")).holders == 1
        await a.release_handle(held)
        await b.release_handle(await asyncio.wait_for(waiting, 5))
        assert (await store.resource_snapshot("closing")).holders == 0
