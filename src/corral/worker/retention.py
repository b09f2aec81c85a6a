"""Automatic retention: a worker started with ``retain`` deletes, now and then, the run trees
that ended more than that long ago (``Store.purge_finished``), so the store of a busy
deployment stays the size of its retention window and nobody has to schedule
``corral runs purge``.

Every worker of a deployment may run it (the loop of ``sweeps.py``: a pass deletes in batches
of ``batch`` trees at a random moment of each interval). Two passes that meet delete disjoint
rows or retry (the store retries a transaction that loses a deadlock).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from corral.store import Store
from corral.worker.sweeps import in_batches, sweep_loop

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

    def purged(deleted: int) -> None:
        on_purged(deleted)
        log.info("retention deleted %d runs that ended over %.0f s ago", deleted, retain)

    await sweep_loop(
        interval,
        lambda: purge_pass(store, retain, batch=batch),
        done=purged,
        failed="retention pass failed",
        log=log,
    )


async def purge_pass(store: Store, retain: float, *, batch: int = RETENTION_BATCH) -> int:
    """One pass: delete batches until one comes back short (or the pass's limit)."""

    async def step(limit: int) -> int:
        return await store.purge_finished(store.clock() - retain, limit=limit)

    return await in_batches(step, batch, RETENTION_BATCHES_PER_PASS)
