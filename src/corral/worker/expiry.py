"""Ending runs not started within their ``start_within`` while they wait (``Store.expire_overdue``).

Every worker looks every ``EXPIRY_INTERVAL`` seconds or so (the loop of ``sweeps.py``). A
look that finds nothing is one read through an index holding only undelivered runs with a
limit; a run it ends is one a lease would have ended later, so two workers that meet end
each run once (the store's update is conditional) and nothing else changes.
"""

from __future__ import annotations

import logging

from corral.store import Store
from corral.worker.sweeps import in_batches, sweep_loop

log = logging.getLogger(__name__)

#: seconds between two looks of a worker: how late, at most, past its limit a waiting run
#: is ended (and its submitter, or waiting parent, told)
EXPIRY_INTERVAL = 2.0
#: runs ended per transaction; a look goes on while batches come back full
EXPIRY_BATCH = 500
#: batches one look ends at most (the next look goes on)
EXPIRY_BATCHES_PER_LOOK = 10


async def expiry_loop(store: Store, interval: float | None = None) -> None:
    """End the runs past their ``start_within``, once every ``interval`` seconds or so,
    until cancelled."""

    def ended(n: int) -> None:
        log.info("%d runs not started within their start_within ended as expired", n)

    await sweep_loop(
        interval or EXPIRY_INTERVAL,
        lambda: expire_pass(store),
        done=ended,
        failed="could not end the runs past their start_within",
        log=log,
    )


async def expire_pass(store: Store) -> int:
    """One look: batches until one comes back short (or the look's limit)."""

    async def step(limit: int) -> int:
        return await store.expire_overdue(limit=limit)

    return await in_batches(step, EXPIRY_BATCH, EXPIRY_BATCHES_PER_LOOK)
