"""Injected time. The store and the worker read time only through a ``Clock``, so tests can
advance a fake one instead of sleeping (STYLE habit 9)."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def __call__(self) -> float:
        """Seconds since the epoch, as a float."""
        ...


def system_clock() -> float:
    return time.time()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
