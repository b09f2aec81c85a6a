"""A SQLite write transaction waits for another process's write lock by trying again after
short sleeps (``StoreConfig.lock_poll``), not in SQLite's busy handler, whose sleeps
grow to 100 ms: it gets the lock soon after the other process lets it go, and still gives up
with StoreUnavailable once the store's busy timeout has passed."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from corral import InvalidInput, StoreUnavailable
from corral.config import StoreConfig
from corral.models import RunSpec
from corral.store import create_store

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("lock_poll", [0.002, 0.0])  # 0: SQLite's busy handler
async def test_a_writer_gives_up_after_the_busy_timeout_and_writes_once_the_lock_is_free(
    tmp_path: Path, lock_poll: float
) -> None:
    db = tmp_path / "corral.db"
    store = create_store(f"sqlite:///{db}", StoreConfig(busy_timeout=0.5, lock_poll=lock_poll))
    await store.open()
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.submit([RunSpec("echo")])
        assert 0.5 <= time.monotonic() - started < 3.0
        assert (await store.stats()).queued == 0  # nothing half-written

        async def release_later() -> None:
            await asyncio.sleep(0.3)
            blocker.execute("ROLLBACK")

        releasing = asyncio.create_task(release_later())
        (run_id,) = await store.submit([RunSpec("echo")])  # waits, then gets the lock
        await releasing
        assert (await store.get(run_id)) is not None
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
        await store.close()


@pytest.mark.parametrize("bad", [-0.001, float("nan"), "2ms", True])
def test_a_bad_lock_poll_is_refused(bad: object) -> None:
    with pytest.raises(InvalidInput, match="lock_poll"):
        StoreConfig(lock_poll=bad)  # type: ignore[arg-type]
