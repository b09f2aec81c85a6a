"""Acks that cannot be written: kept for as long as their leases may be valid, then given up
together, however many batches they fill.

The outage is real: another connection holds SQLite's write lock, so every write of the store
waits its busy timeout and fails with StoreUnavailable, as a write does while a database
restarts. Each ack's time starts when it is queued: a worker stopping during an outage with
many runs just ended waits one lease TTL, not one per batch of 500 (which it did).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from corral.config import StoreConfig
from corral.models import Ack, RunSpec
from corral.store import Store, create_store
from corral.worker.acker import AckBatcher

RUNS = 2_000  # four batches of 500
RETRY_FOR = 1.0


async def _leased_store(db: Path) -> tuple[Store, list[Ack]]:
    store = create_store(f"sqlite:///{db}", StoreConfig(busy_timeout=0.1))
    await store.open()
    await store.submit([RunSpec("echo", tenant="acme") for _ in range(RUNS)])
    leases = await store.lease("w1", 60.0, RUNS)
    assert len(leases) == RUNS
    return store, [Ack(lease.run_id, lease.epoch, None) for lease in leases]


async def test_acks_past_their_time_are_given_up_together(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    store, acks = await _leased_store(db)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the outage: no write gets through
    try:
        acker = AckBatcher(store, max_batch=500, retry_for=RETRY_FOR)
        for ack in acks:
            acker.ack(ack)
        started = time.monotonic()
        acker.start()
        await acker.close()
        took = time.monotonic() - started
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    try:
        # one lease TTL and a last try, not four (one per batch)
        assert RETRY_FOR <= took < 2 * RETRY_FOR, took
        stats = await store.stats()
        assert stats.in_flight == RUNS  # nothing written: the leases will expire
    finally:
        await store.close()


async def test_acks_are_written_when_the_outage_ends_in_time(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    store, acks = await _leased_store(db)
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        acker = AckBatcher(store, max_batch=500, retry_for=30.0)
        for ack in acks:
            acker.ack(ack)
        acker.start()
        await asyncio.sleep(0.5)  # a few failed tries
        blocker.execute("ROLLBACK")
        await asyncio.wait_for(acker.close(), timeout=20)
        stats = await store.stats()
        assert stats.in_flight == 0
        assert stats.by_status.get("succeeded") == RUNS
    finally:
        blocker.close()
        await store.close()
