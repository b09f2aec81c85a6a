"""Batches acknowledgements: every ack that arrives while one batch is being written goes into
the next, so a busy worker acks many runs per transaction and an idle one acks at once.

An ack is fire-and-forget for the run that made it: its slot is already free. A refused ack
(the lease was lost to another worker, or the ack was written already by a call that failed
after writing it, and came here to be written again) needs nothing from this worker. A
batch the store cannot take (StoreUnavailable: the database restarting, a dropped
connection) is written again, with backoff, for as long as its leases can still be
valid (``retry_for``, the lease TTL): a database restart then costs a pause, not a second
execution of every run that ended during it. Past that, or on any other error, the batch is
dropped and its leases expire, and the runs are delivered again; on any other error its acks
are written one by one, so one the store refuses does not sink the rest. All of it is logged,
not raised.
"""

from __future__ import annotations

import asyncio
import logging
import time

from corral.errors import StoreUnavailable
from corral.models import Ack
from corral.store import Store

log = logging.getLogger(__name__)


class AckBatcher:
    def __init__(self, store: Store, max_batch: int = 500, retry_for: float = 30.0) -> None:
        self._store = store
        self._max_batch = max_batch
        self._retry_for = retry_for
        self._pending: list[Ack] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="corral-acker")

    def ack(self, ack: Ack) -> None:
        """Queue an ack; it is written with the next batch."""
        self._pending.append(ack)
        self._wake.set()

    async def close(self) -> None:
        """Write every pending ack, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._write(batch)
            if self._closing:
                return

    async def _write(self, batch: list[Ack]) -> None:
        give_up = time.monotonic() + self._retry_for
        delay = 0.05
        while True:
            try:
                lost = await self._store.ack_many(batch)
                break
            except StoreUnavailable as exc:
                if time.monotonic() + delay > give_up:
                    log.error(
                        "writing %d acks failed, their runs will be redelivered: %s",
                        len(batch),
                        exc,
                    )
                    return
                log.warning(
                    "writing %d acks failed, retrying in %.2f s: %s", len(batch), delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception as exc:  # not the store's reachability: another try would fail too
                if len(batch) > 1:
                    # one ack the store refuses must not sink the others: write them one by one
                    for ack in batch:
                        await self._write([ack])
                    return
                log.error("writing the ack of run %s failed: %s", batch[0].run_id, exc)
                return
        if lost:
            log.info(
                "%d acks refused (lease lost to another worker, or the ack already written): %s",
                len(lost),
                ", ".join(sorted(lost)[:10]),
            )
