"""Turns keep concurrent journaled calls' writes in the order the calls were made."""

from __future__ import annotations

import asyncio

from corral.runs.turns import Turns


async def test_writes_follow_call_order_whatever_order_the_calls_end_in() -> None:
    turns = Turns()
    written: list[str] = []

    async def call(name: str, work: float, gives_up: bool = False) -> None:
        turn = turns.take()  # taken when the call is made
        try:
            await asyncio.sleep(work)
            if gives_up:
                return  # ends without writing
            await turn.come()
            written.append(name)
        finally:
            turn.end()

    # "b" gives up first: that must not let "c" write before "a"
    await asyncio.gather(call("a", 0.05), call("b", 0.0, gives_up=True), call("c", 0.0))
    assert written == ["a", "c"]


async def test_a_cancelled_wait_leaves_the_earlier_turn_alone() -> None:
    turns = Turns()
    first, second, third = turns.take(), turns.take(), turns.take()
    waiting = asyncio.create_task(second.come())
    await asyncio.sleep(0)
    waiting.cancel()  # a later call cancelled while it waits for its turn
    await asyncio.gather(waiting, return_exceptions=True)
    second.end()
    pending = asyncio.create_task(third.come())
    await asyncio.sleep(0.01)
    assert not pending.done()  # "first" has not written yet
    first.end()
    await asyncio.wait_for(pending, 1)
