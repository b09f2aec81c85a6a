"""Batches acknowledgements: every ack that arrives while one batch is being written goes into
the next, so a busy worker acks many runs per transaction and an idle one acks at once."""

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
        self._pending: list[tuple[Ack, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="corral-acker")

    def ack(self, ack: Ack) -> asyncio.Future[bool]:
        """Queue an ack; the future resolves True when written, False if the lease was lost."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((ack, future))
        self._wake.set()
        return future

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
                    lost = await self._store.ack_many([a for a, _ in batch])
                except Exception as exc:  # the store is down: the leases will expire and redeliver
                    log.error("writing %d acks failed: %s", len(batch), exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for ack, future in batch:
                    if not future.done():
                        future.set_result(ack.run_id not in lost)
            if self._closing:
                return
