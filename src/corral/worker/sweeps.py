"""The loop of a worker's store sweeps (retention, expiry): a pass now and then, each at a
random moment of its interval, so that workers started together do not sweep in step; a pass
works in batches, one transaction each, until a batch comes back short or the pass has done
its share (the next pass goes on); a failed pass (the store briefly unreachable, say) is
logged and the next interval tries again, without disturbing the runs in flight."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable


async def sweep_loop(
    interval: float,
    sweep: Callable[[], Awaitable[int]],
    *,
    done: Callable[[int], None],
    failed: str,
    log: logging.Logger,
) -> None:
    """``sweep()`` once per ``interval`` seconds, at a random moment of each, until
    cancelled; ``done(n)`` after a pass that swept ``n`` > 0 rows; ``failed`` (with the
    error) logged to ``log`` after a pass that raised."""
    while True:
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        try:
            n = await sweep()
        except Exception as exc:  # the store may be briefly unreachable: try next interval
            log.warning("%s: %s", failed, exc)
            continue
        if n:
            done(n)


async def in_batches(step: Callable[[int], Awaitable[int]], batch: int, most: int) -> int:
    """``step(batch)`` (one transaction, returning how many rows it swept) until it sweeps
    fewer than ``batch`` rows, at most ``most`` times; how many rows in all."""
    total = 0
    for _ in range(most):
        n = await step(batch)
        total += n
        if n < batch:
            break
    return total
