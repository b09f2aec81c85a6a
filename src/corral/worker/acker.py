"""Batches acknowledgements: every ack that arrives while one batch is being written goes into
the next, so a busy worker acks many runs per transaction and an idle one acks at once.

An ack is fire-and-forget for the run that made it: its slot is already free. A refused ack
(the lease was lost to another worker) needs nothing from this worker, since the new owner
finishes the run; a batch that cannot be written at all leaves its leases to expire, and the
runs are delivered again. Both are logged, not raised.
"""

from __future__ import annotations

import asyncio
import logging

from corral.models import Ack
from corral.store import Store

log = logging.getLogger(__name__)


class AckBatcher:
    def __init__(self, store: Store, max_batch: int = 500) -> None:
        self._store = store
        self._max_batch = max_batch
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
                try:
                    lost = await self._store.ack_many(batch)
                except Exception as exc:  # the store is down: the leases will expire and redeliver
                    log.error("writing %d acks failed: %s", len(batch), exc)
                    continue
                if lost:
                    log.info(
                        "%d acks refused, their leases lost to other workers: %s",
                        len(lost),
                        ", ".join(sorted(lost)[:10]),
                    )
            if self._closing:
                return
