"""Retry backoff: exponential with jitter, so a failing dependency is not hammered in lockstep."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 300.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    The ceiling doubles per attempt up to ``cap``; the delay is drawn from its upper half,
    which spreads retries while keeping the expected delay growing.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    ceiling = min(cap, base * (2.0 ** min(attempt - 1, 62)))
    return ceiling * (0.5 + 0.5 * (rng or random).random())
