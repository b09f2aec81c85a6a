"""One poll of the store for all the event streams of a service instance.

An open stream has sent a run's journal up to some seq and waits for more. Rather than each
stream reading its run and its journal every interval (two queries per stream per interval,
whatever happens), the streams register here, and one task reads the status and journal length
of every watched run in one query per interval (``Store.progress``). A stream is woken only
when its run has entries past the ones it sent, ended, or vanished; it then reads as before.
The cost of idle streams is one query per interval for all of them together.

The task runs only while some stream waits, and a failed poll wakes every waiter, so that each
reads the store itself and reports the failure on its own stream.

Closing the watcher (the service stopping) wakes every waiter and makes every later wait
return at once; a stream that finds it ``closed`` ends, so the server does not wait for
streams that would otherwise run as long as their runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from corral.store import Store

log = logging.getLogger(__name__)

#: runs read per query
BATCH = 1000


class RunWatcher:
    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._task: asyncio.Task[None] | None = None
        #: set by close(): each stream ends at its next wait
        self.closed = False
        #: polls made (for tests and debugging: idle streams share them)
        self.polls = 0

    @property
    def watched(self) -> int:
        return len(self._waiters)

    async def wait(self, run_id: str, after: int, timeout: float) -> None:
        """Return once ``run_id`` has journal entries past seq ``after``, has ended or no
        longer exists, or after ``timeout`` seconds, whichever comes first; immediately when
        the watcher is closed."""
        if self.closed:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (after, future)
        self._waiters.setdefault(run_id, []).append(entry)
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="corral-run-watcher")
        try:
            await asyncio.wait({future}, timeout=max(0.0, timeout))
        finally:
            waiters = self._waiters.get(run_id)
            if waiters is not None:
                waiters.remove(entry)
                if not waiters:
                    del self._waiters[run_id]
            if not future.done():
                future.cancel()

    async def _poll(self) -> None:
        try:
            while self._waiters:
                await asyncio.sleep(self.interval)
                self.polls += 1
                try:
                    await self._poll_once()
                except Exception as exc:
                    log.warning("polling watched runs failed: %s", exc)
                    self._wake_all()
        finally:
            self._task = None

    async def _poll_once(self) -> None:
        run_ids = list(self._waiters)
        for start in range(0, len(run_ids), BATCH):
            chunk = run_ids[start : start + BATCH]
            progress = await self.store.progress(chunk)
            for run_id in chunk:
                seen = progress.get(run_id)
                for after, future in self._waiters.get(run_id, ()):
                    if future.done():
                        continue
                    if seen is None or seen[0].terminal or seen[1] > after:
                        future.set_result(None)

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for _, future in waiters:
                if not future.done():
                    future.set_result(None)

    async def close(self) -> None:
        """Wake every waiter, stop polling, and answer every later wait at once (service
        shutdown)."""
        self.closed = True
        self._wake_all()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
