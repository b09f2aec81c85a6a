"""Group commit for submits: concurrent HTTP submits share one store transaction.

Each accepted run costs the store a transaction (a handful of statements and, on PostgreSQL,
as many round trips). Under load most of that is per transaction, not per run, so the service
hands submits to one ``SubmitBatcher``: the first submit starts a drain task, which takes every
submit waiting at that moment (up to ``max_batch``) into one ``Corral.submit_many`` call; the
submits that arrive meanwhile form the next batch. There is no timer: alone, a submit goes at
once (a batch of one); under load, batches grow with the load and the transaction count stays
flat.

A batch is all-or-nothing in the store, but a client's answer must be its own: when a batch
is refused for a reason one of its runs may cause (invalid input, a full queue), its submits
are retried one by one, so each gets its own run id or its own error. A store that is down
fails the whole batch at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from corral.app import Corral
from corral.errors import CorralError, ShutdownError, StoreUnavailable

Spec = Mapping[str, Any]
log = logging.getLogger(__name__)


class SubmitBatcher:
    def __init__(self, app: Corral, *, max_batch: int = 256) -> None:
        self._app = app
        self._max = max_batch
        self._pending: list[tuple[Spec, asyncio.Future[str]]] = []
        self._drain: asyncio.Task[None] | None = None
        #: batches handled, and the submits in them (for tests and tuning)
        self.batches = 0
        self.batched_runs = 0

    async def submit(self, spec: Spec) -> str:
        """Accept one run (``Corral.submit_many`` item fields); returns its id."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((spec, future))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._run(), name="corral-submit-batcher")
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self._max]
            del self._pending[: self._max]
            await self._commit(batch)
            self.batches += 1
            self.batched_runs += len(batch)

    async def _commit(self, batch: list[tuple[Spec, asyncio.Future[str]]]) -> None:
        try:
            if len(batch) == 1:
                await self._one(*batch[0])
                return
            try:
                ids = await self._app.submit_many([spec for spec, _ in batch])
            except StoreUnavailable as exc:
                for _, future in batch:
                    _settle(future, exc=exc)
                return
            except (CorralError, ValueError, TypeError):
                for spec, future in batch:  # find out whose run it was: one by one
                    await self._one(spec, future)
                return
        except Exception as exc:
            # not foreseen: this batch's submits get the error (a 500), and the drain goes on,
            # or the submits queued behind it would wait for the next submit to start one
            log.exception("a batch of %d submits failed", len(batch))
            for _, future in batch:
                _settle(future, exc=exc)
            return
        except BaseException:
            for _, future in batch:
                _settle(future, exc=ShutdownError("the service stopped before the submit ended"))
            raise
        for (_, future), run_id in zip(batch, ids, strict=True):
            _settle(future, result=run_id)

    async def _one(self, spec: Spec, future: asyncio.Future[str]) -> None:
        try:
            run_id = await self._app.submit(**spec)
        except (CorralError, ValueError, TypeError) as exc:
            _settle(future, exc=exc)
        else:
            _settle(future, result=run_id)


def _settle(
    future: asyncio.Future[str], *, result: str | None = None, exc: BaseException | None = None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None
        future.set_result(result)
