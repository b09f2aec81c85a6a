"""SQLite's write-ahead log is checkpointed by a thread of the store's own, not inside a commit.

SQLite checkpoints by itself inside the COMMIT that takes the log past 1,000 pages, and that
commit (and the process's next transaction behind it) waits tens of milliseconds while the
pages are copied and synced. The store now runs PASSIVE checkpoints on a thread of its own
and raises the commit's mark to a backstop. The WAL file's size tells which happened: a
checkpoint that copied the whole log lets the next write start the file over, so the file
never grows past what was written between two checkpoints.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path

import pytest

from corral.config import StoreConfig
from corral.errors import InvalidInput
from corral.models import RunSpec
from corral.store import Store, create_store
from corral.store.sqlite_checkpoint import BACKSTOP_PAGES

PAGE = 4096
#: SQLite's own auto-checkpoint mark, in pages
SQLITE_MARK = 1000
#: an input that fills a page of its own (an overflow page) in the runs table and the journal
BULKY = {"text": "x" * PAGE}


def _wal_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def _largest_log(store: Store, db: Path, batches: int, pause: float) -> int:
    """Submit ``batches`` batches of 50 bulky runs (about 80 pages of log each); the largest
    size the WAL file reached."""
    largest = 0
    for _ in range(batches):
        await store.submit([RunSpec("echo", input=BULKY, tenant="acme") for _ in range(50)])
        largest = max(largest, _wal_bytes(db))
        await asyncio.sleep(pause)
    return largest


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "corral-sqlite-checkpoint"]


async def test_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    # a checkpointer that never comes round in this test: only commits could checkpoint
    store = create_store(f"sqlite:///{db}", StoreConfig(checkpoint_interval=3600.0))
    await store.open()
    try:
        largest = await _largest_log(store, db, batches=30, pause=0.0)
    finally:
        await store.close()
    # no commit checkpointed at SQLite's mark: the log kept all of the ~2,400 pages written
    assert largest > 1.5 * SQLITE_MARK * PAGE, largest
    assert largest < BACKSTOP_PAGES * PAGE * 1.1


async def test_the_checkpointer_keeps_the_log_short(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    store = create_store(f"sqlite:///{db}", StoreConfig(checkpoint_interval=0.01))
    await store.open()
    try:
        assert len(_checkpoint_threads()) == 1
        largest = await _largest_log(store, db, batches=40, pause=0.05)
        runs = await store.stats()
    finally:
        await store.close()
    assert runs.queued == 40 * 50
    # everything written went through the log (the closed file holds it all)
    assert db.stat().st_size > 2 * SQLITE_MARK * PAGE
    # each batch is about 100 pages; checkpoints between batches keep the log to a few
    # batches, far below what SQLite's own mark would let it reach
    assert largest < SQLITE_MARK * PAGE / 2, largest
    assert _checkpoint_threads() == []


async def test_interval_zero_leaves_checkpoints_to_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    store = create_store(f"sqlite:///{db}", StoreConfig(checkpoint_interval=0))
    await store.open()
    try:
        assert _checkpoint_threads() == []
        largest = await _largest_log(store, db, batches=30, pause=0.0)
    finally:
        await store.close()
    assert db.stat().st_size > 1.5 * SQLITE_MARK * PAGE
    # SQLite's own checkpoints at 1,000 pages start the file over: one batch past the mark
    assert largest < 1.3 * SQLITE_MARK * PAGE, largest


@pytest.mark.parametrize("interval", [-1.0, math.nan, math.inf, "0.05", True])
def test_a_bad_checkpoint_interval_is_refused(tmp_path: Path, interval: object) -> None:
    with pytest.raises(InvalidInput, match="checkpoint_interval"):
        create_store(
            f"sqlite:///{tmp_path / 'corral.db'}",
            StoreConfig(checkpoint_interval=interval),  # type: ignore[arg-type]
        )
