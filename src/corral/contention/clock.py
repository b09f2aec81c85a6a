"""Time, injected: the scheduler reads the clock and sets timers only through a ``Clock``.

Ticks (the load score's time) are logical and advanced by releases; seconds are used only
for timeouts and for the wait-time statistics. Tests pass a :class:`ManualClock` and move it
with :meth:`ManualClock.advance` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` once, ``delay`` seconds from now, unless cancelled first."""
        ...


class LoopClock:
    """The real thing: ``time.monotonic`` and the running event loop's timers."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


class _ManualTimer:
    __slots__ = ("callback", "cancelled", "deadline", "order")

    def __init__(self, deadline: float, order: int, callback: Callable[[], object]) -> None:
        self.deadline = deadline
        self.order = order
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: _ManualTimer) -> bool:
        return (self.deadline, self.order) < (other.deadline, other.order)


class ManualClock:
    """A clock that moves only when told to; due timers run inside :meth:`advance`."""

    __slots__ = ("_heap", "_now", "_order")

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[_ManualTimer] = []
        self._order = 0

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        self._order += 1
        timer = _ManualTimer(self._now + max(delay, 0.0), self._order, callback)
        heapq.heappush(self._heap, timer)
        return timer

    def advance(self, seconds: float) -> int:
        """Move forward, running due timers in deadline order; returns how many ran."""
        target = self._now + seconds
        ran = 0
        while self._heap and self._heap[0].deadline <= target:
            timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self._now = max(self._now, timer.deadline)
            timer.callback()
            ran += 1
        self._now = target
        return ran

    @property
    def pending(self) -> int:
        """Timers not yet run nor cancelled."""
        return sum(1 for t in self._heap if not t.cancelled)
