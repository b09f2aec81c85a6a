"""Ending runs not started within their ``start_within`` while they wait (``Store.expire_overdue``).

Every worker looks every ``EXPIRY_INTERVAL`` seconds or so (at a random moment of each, so
workers that started together do not look in step). A look that finds nothing is one read
through an index holding only undelivered runs with a limit; a run it ends is one a lease
would have ended later, so two workers that meet end each run once (the store's update is
conditional) and nothing else changes.
"""

from __future__ import annotations

import asyncio
import logging
import random

from corral.store import Store

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
    while True:
        await asyncio.sleep((interval or EXPIRY_INTERVAL) * random.uniform(0.5, 1.0))
        try:
            ended = await expire_pass(store)
        except Exception as exc:  # the store may be briefly unreachable: look again later
            log.warning("could not end the runs past their start_within: %s", exc)
            continue
        if ended:
            log.info("%d runs not started within their start_within ended as expired", ended)


async def expire_pass(store: Store) -> int:
    """One look: batches until one comes back short (or the look's limit)."""
    ended = 0
    for _ in range(EXPIRY_BATCHES_PER_LOOK):
        n = await store.expire_overdue(limit=EXPIRY_BATCH)
        ended += n
        if n < EXPIRY_BATCH:
            break
    return ended
