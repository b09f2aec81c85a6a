"""Batches acknowledgements: every ack that arrives while one batch is being written goes into
the next, so a busy worker acks many runs per transaction and an idle one acks at once.

An ack is fire-and-forget for the run that made it: its slot is already free. A refused ack
(the lease was lost to another worker, or the ack was written already by a call that failed
after writing it, and came here to be written again) needs nothing from this worker. A
batch the store cannot take (StoreUnavailable: the database restarting, a dropped
connection) is written again, with backoff, for as long as its leases can still be
valid (``retry_for``, the lease TTL, from the moment each ack was queued): a database restart
then costs a pause, not a second execution of every run that ended during it. Past that the
ack is dropped, its lease expires and its run is delivered again. The clock of each ack starts
when it is queued, not when its batch is first tried, so acks queued together are given up
together: a worker stopping during an outage waits one TTL, not one per batch. On any other
error a batch's acks are written one by one, so one the store refuses does not sink the rest.
All of it is logged, not raised.
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
        #: acks to write, each with the monotonic time past which it is not worth writing
        self._pending: list[tuple[Ack, float]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="corral-acker")

    def ack(self, ack: Ack) -> None:
        """Queue an ack; it is written with the next batch."""
        self._pending.append((ack, time.monotonic() + self._retry_for))
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

    async def _write(self, batch: list[tuple[Ack, float]]) -> None:
        delay = 0.05
        while True:
            batch = self._still_worth_writing(batch, "the store was unreachable")
            if not batch:
                return
            try:
                lost = await self._store.ack_many([ack for ack, _ in batch])
                break
            except StoreUnavailable as exc:
                batch = self._still_worth_writing(batch, str(exc), within=delay)
                if not batch:
                    return
                log.warning(
                    "writing %d acks failed, retrying in %.2f s: %s", len(batch), delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception as exc:  # not the store's reachability: another try would fail too
                if len(batch) > 1:
                    # one ack the store refuses must not sink the others: write them one by one
                    for one in batch:
                        await self._write([one])
                    return
                log.error("writing the ack of run %s failed: %s", batch[0][0].run_id, exc)
                return
        if lost:
            log.info(
                "%d acks refused (lease lost to another worker, or the ack already written): %s",
                len(lost),
                ", ".join(sorted(lost)[:10]),
            )

    @staticmethod
    def _still_worth_writing(
        batch: list[tuple[Ack, float]], why: str, *, within: float = 0.0
    ) -> list[tuple[Ack, float]]:
        """The acks of ``batch`` whose leases may still be valid ``within`` seconds from now;
        the others are logged as given up (their runs will be delivered again)."""
        now = time.monotonic() + within
        kept = [(ack, until) for ack, until in batch if until > now]
        if len(kept) < len(batch):
            log.error(
                "writing %d acks failed, their runs will be redelivered: %s",
                len(batch) - len(kept),
                why,
            )
        return kept
