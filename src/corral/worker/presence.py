"""A worker's reports of itself to the store (``Store.report_worker``): every third of its
lease TTL, and at once when it starts draining or gives up on an agent, so that `corral
workers` and /metrics show those without waiting for the next interval. A failed report is
logged and the next one tries again: it never disturbs the runs in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from corral.models import WorkerPresence
from corral.store import Store

log = logging.getLogger(__name__)


async def presence_loop(
    store: Store,
    presence: Callable[[], WorkerPresence],
    interval: float,
    due: asyncio.Event,
) -> None:
    """Report ``presence()`` every ``interval`` seconds, and whenever ``due`` is set, until
    cancelled."""
    while True:
        due.clear()
        try:
            await store.report_worker(presence())
        except Exception as exc:  # the store may be briefly unreachable: the next report
            log.warning("could not report this worker to the store: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(due.wait(), interval)
