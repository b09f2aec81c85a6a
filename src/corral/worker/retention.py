"""Automatic retention: a worker started with ``retain`` deletes, now and then, the run trees
that ended more than that long ago (``Store.purge_finished``), so the store of a busy
deployment stays the size of its retention window and nobody has to schedule
``corral runs purge``.

Every worker of a deployment may run it: a pass deletes in batches of ``batch`` trees until a
batch comes back short, and passes start at a random point of each interval, so workers that
started together do not purge in step. Two passes that meet delete disjoint rows or retry
(the store retries a transaction that loses a deadlock); a failed pass is logged and the next
interval tries again, without disturbing the runs in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from corral.store import Store

log = logging.getLogger(__name__)

#: seconds between two retention passes of a process
RETENTION_INTERVAL = 60.0
#: top-level runs (each with its descendants) deleted per transaction
RETENTION_BATCH = 500
#: batches one pass deletes at most, so a first pass over a long backlog of ended runs
#: does not hold the store busy for long; the next pass goes on where it stopped
RETENTION_BATCHES_PER_PASS = 20


async def retention_loop(
    store: Store,
    retain: float,
    interval: float,
    *,
    batch: int = RETENTION_BATCH,
    on_purged: Callable[[int], None] = lambda n: None,
) -> None:
    """Purge runs that ended more than ``retain`` seconds ago, once per ``interval`` seconds
    (at a random moment of each), until cancelled."""
    while True:
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        try:
            deleted = await purge_pass(store, retain, batch=batch)
        except Exception as exc:  # the store may be briefly unreachable: try next interval
            log.warning("retention pass failed: %s", exc)
            continue
        if deleted:
            on_purged(deleted)
            log.info("retention deleted %d runs that ended over %.0f s ago", deleted, retain)


async def purge_pass(store: Store, retain: float, *, batch: int = RETENTION_BATCH) -> int:
    """One pass: delete batches until one comes back short (or the pass's limit)."""
    deleted = 0
    for _ in range(RETENTION_BATCHES_PER_PASS):
        n = await store.purge_finished(store.clock() - retain, limit=batch)
        deleted += n
        if n < batch:
            break
    return deleted
