"""Journal entries in call order, whatever order concurrent calls end in.

Replay answers a run's journaled calls by position (``replay.py``), so the journal must hold
them in the order the agent made them. An agent may make them concurrently
(``asyncio.gather(ctx.step("slow", ...), ctx.step("fast", ...))``): "fast" ends first, and
written then it would take "slow"'s position, and the next delivery would fail with
``NonDeterminismError``. So each call takes a turn when it is made (synchronously, before its
first await, as replay takes its position) and writes only once every earlier call has
written or given up. The work itself (a step's function) still runs concurrently; only the
write, and the return of the call, wait.
"""

from __future__ import annotations

import asyncio


class Turn:
    __slots__ = ("_before", "_mine")

    def __init__(self, before: asyncio.Future[None] | None, mine: asyncio.Future[None]) -> None:
        self._before = before
        self._mine = mine

    async def come(self) -> None:
        """Wait until every call made before this one has written its entry or given up."""
        if self._before is not None and not self._before.done():
            # shielded: this call's cancellation must not cancel the earlier call's turn
            await asyncio.shield(self._before)

    def end(self) -> None:
        """This call has written its entry, or will not: the next call's turn, once every
        earlier call's has ended too (a call that gave up early must not let a later one
        write before an earlier one)."""
        if self._before is None or self._before.done():
            self._pass()
        else:
            self._before.add_done_callback(lambda _: self._pass())

    def _pass(self) -> None:
        if not self._mine.done():
            self._mine.set_result(None)


class Turns:
    def __init__(self) -> None:
        self._last: asyncio.Future[None] | None = None

    def take(self) -> Turn:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        before, self._last = self._last, mine
        return Turn(before, mine)
