"""Waiting in a test for a store read to come to a state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float = 20.0
) -> T:
    """``read()`` every 20 ms until ``done`` holds for what it returns (that value), or fail
    after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = await read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out; last read: {value!r}"
        await asyncio.sleep(0.02)
