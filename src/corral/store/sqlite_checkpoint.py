"""Checkpoints of a SQLite write-ahead log on a thread of their own, off every commit's path.

SQLite's own auto-checkpoint runs inside the COMMIT that takes the WAL past 1,000 pages: that
commit returns only once the pages have been copied into the database file and synced (28-67 ms
measured on this project's 2-core machine, against a commit's usual fraction of a millisecond),
and the process's next transaction waits behind it. A PASSIVE checkpoint never takes the write
lock and never waits for a reader, so running one here every ``interval`` seconds leaves
commits nothing but their own work, in every process that has the file open.

Writers keep SQLite's auto-checkpoint as a backstop, at ``BACKSTOP_PAGES``: if this thread ever
falls behind (a stalled disk, a paused process), a commit checkpoints as before, only later.
The WAL restarts from its beginning at the first write after a checkpoint has copied all of it,
whoever ran that checkpoint, so the file stays as small as before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger("corral.store")

#: the WAL size (pages) at which a commit checkpoints anyway; SQLite's default is 1,000
BACKSTOP_PAGES = 10_000


class WalCheckpointer:
    """A daemon thread that runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"checkpoint interval must be positive, got {interval!r}")
        self._connect = connect
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: the last checkpoint failed (logged once, until one succeeds again)
        self._failing = False

    def start(self) -> None:
        if self._thread is not None:
            return
        # the connection is made here so that a file that cannot be opened fails the store's
        # open, not a thread nobody watches
        conn = self._connect()
        self._thread = threading.Thread(
            target=self._loop, args=(conn,), name="corral-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def _loop(self, conn: sqlite3.Connection) -> None:
        try:
            while not self._stop.wait(self._interval):
                self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            if not self._failing:
                log.warning(
                    "SQLite WAL checkpoints are failing (retried every %.3f s): %s",
                    self._interval,
                    exc,
                )
            self._failing = True
            return
        if self._failing:
            log.warning("SQLite WAL checkpoints succeed again")
            self._failing = False
