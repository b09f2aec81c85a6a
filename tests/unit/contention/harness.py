"""A driver for the scheduler with an independent model of what must happen.

Every acquire runs in its own task; the test decides when bodies finish, raise or are
cancelled, moves a ManualClock for timeouts, changes capacity and shuts down. The model
predicts each outcome and, at every grant, checks that the granted agent is an argmax of
L(i) computed directly (exact fractions) from the model's own record of waiting requests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from fractions import Fraction

from corral.contention import AcquireHandle, ManualClock, Scheduler, SharedResource
from corral.errors import BackpressureError, ShutdownError


class Boom(Exception):
    """Raised by a body on purpose."""


@dataclass(eq=False)
class Call:
    n: int
    agent: str
    weight: int
    timeout: float | None
    split: bool  # acquire_start / release_handle instead of async with
    status: str = "new"  # waiting, holding, released, cancelled, timed_out, rejected, shutdown
    seq: int = -1
    arrival: int = -1
    deadline: float = 0.0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    fail: bool = False
    handle: AcquireHandle | None = None
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None
    entered: bool = False
    raced: bool = False  # cancelled after its grant, before it could resume


def reference_winner(waiting: list[Call], tick: int, alpha: Fraction) -> tuple[str, int]:
    """(agent, seq of its oldest request) that L(i) picks, ties to the earliest request."""
    loads: dict[str, Fraction] = {}
    oldest: dict[str, Call] = {}
    for c in waiting:
        loads[c.agent] = loads.get(c.agent, Fraction(0)) + c.weight
        if c.agent not in oldest or c.seq < oldest[c.agent].seq:
            oldest[c.agent] = c
    max_q = max(loads.values())
    max_d = max(tick - o.arrival for o in oldest.values())

    def score(agent: str) -> Fraction:
        d = Fraction(tick - oldest[agent].arrival, max_d) if max_d > 0 else Fraction(0)
        return alpha * loads[agent] / max_q + (1 - alpha) * d

    best = max(score(a) for a in loads)
    winner = min((a for a in loads if score(a) == best), key=lambda a: oldest[a].seq)
    return winner, oldest[winner].seq


class Harness:
    def __init__(
        self,
        *,
        capacity: int,
        alpha: float,
        max_waiters: int,
        max_per_agent: int | None = None,
    ) -> None:
        self.clock = ManualClock()
        self.resource = SharedResource("llm", capacity=capacity)
        self.alpha = Fraction(alpha)
        self.max_waiters = max_waiters
        self.max_per_agent = max_per_agent
        self.scheduler = Scheduler(
            self.resource,
            alpha=alpha,
            max_waiters=max_waiters,
            max_waiters_per_agent=max_per_agent,
            clock=self.clock,
            on_grant=self._on_grant,
            on_release=self._on_release,
        )
        self.calls: list[Call] = []
        self.tick = 0  # the model's tick: one per release
        self.capacity = capacity
        self.closed = False
        self.spawning: Call | None = None
        self.grants = 0

    # -- model views --------------------------------------------------------------------

    def waiting(self) -> list[Call]:
        return [c for c in self.calls if c.status == "waiting"]

    def holding(self) -> list[Call]:
        return [c for c in self.calls if c.status == "holding"]

    # -- hooks: where the model checks each decision -----------------------------------------

    def _on_grant(self, h: AcquireHandle) -> None:
        holders = len(self.holding())
        assert holders < self.capacity, "granted beyond capacity"
        if not h.requests:  # granted at once
            c = self.spawning
            assert c is not None and c.agent == h.agent_id, "unexpected immediate grant"
            assert not self.waiting(), "barged past waiters"
        else:
            # A waiter whose task was cancelled but has not run yet still counts in the
            # score (asyncio delivers the cancellation only when the task runs); if it
            # comes out on top it is dropped, never granted, and the choice is made again.
            waiting = [c for c in self.calls if c.status in ("waiting", "cancelling")]
            by_seq = {c.seq: c for c in waiting}
            seq = h.requests[0].seq
            assert seq in by_seq, "granted a request that is not waiting"
            while True:
                agent, oldest = reference_winner(waiting, self.tick, self.alpha)
                if by_seq[oldest].status != "cancelling":
                    break
                by_seq[oldest].status = "cancelled"
                waiting.remove(by_seq[oldest])
            assert (h.agent_id, seq) == (agent, oldest), (
                f"granted {h.agent_id}/{seq}, L(i) says {agent}/{oldest}"
            )
            c = by_seq[seq]
        c.status = "holding"
        c.handle = h
        self.grants += 1

    def _on_release(self, h: AcquireHandle) -> None:
        for c in self.calls:
            if c.handle is h:
                assert c.status == "holding", f"released a call in state {c.status}"
                c.status = "released"
                break
        else:
            raise AssertionError("released an unknown handle")
        self.tick += 1

    # -- driving --------------------------------------------------------------------------

    async def settle(self) -> None:
        """Let every runnable task run until all are parked (no sleeping on time)."""
        for _ in range(12):
            await asyncio.sleep(0)

    async def _run(self, c: Call) -> None:
        s = self.scheduler
        try:
            if c.split:
                c.handle = await s.acquire_start(c.agent, c.weight, c.timeout)
                c.entered = True
                return
            async with s.acquire(c.agent, c.weight, c.timeout) as h:
                assert h.granted and c.status == "holding"
                c.entered = True
                await c.gate.wait()
                if c.fail:
                    raise Boom
        except (Boom, BackpressureError, ShutdownError, TimeoutError) as e:
            c.error = e

    async def acquire(self, agent: str, weight: int, timeout: float | None, split: bool) -> Call:
        c = Call(len(self.calls), agent, weight, timeout, split)
        self.calls.append(c)
        free = len(self.holding()) < self.capacity and not self.waiting()
        per_agent = sum(1 for w in self.waiting() if w.agent == agent)
        if self.closed:
            expect = "shutdown"
        elif free:
            expect = "holding"
        elif len(self.waiting()) >= self.max_waiters or (
            self.max_per_agent is not None and per_agent >= self.max_per_agent
        ):
            expect = "rejected"
        else:
            expect = "waiting"
        self.spawning = c
        c.task = asyncio.create_task(self._run(c))
        await asyncio.sleep(0)  # run up to the first real wait
        self.spawning = None
        if expect == "waiting":
            assert c.status == "new" and c.error is None, "should be waiting"
            req = list(self.scheduler.queue().requests())[-1]
            assert req.agent_id == agent and req.arrival == self.tick
            c.seq, c.arrival, c.status = req.seq, req.arrival, "waiting"
            c.deadline = self.clock.now() + timeout if timeout is not None else 0.0
        elif expect == "holding":
            assert c.status == "holding"
        else:
            want = ShutdownError if expect == "shutdown" else BackpressureError
            assert isinstance(c.error, want), f"expected {want.__name__}, got {c.error!r}"
            c.status = expect
        await self.settle()
        return c

    async def finish(self, c: Call, fail: bool) -> None:
        """End a holder's body normally or with an exception (split: release_handle)."""
        if c.split:
            assert c.handle is not None
            await self.scheduler.release_handle(c.handle)
        else:
            c.fail = fail
            c.gate.set()
        await self.settle()

    async def release_then_cancel_granted(self, c: Call) -> list[Call]:
        """Release a split holder and cancel whoever it granted before they can resume."""
        assert c.split and c.handle is not None
        before = {x.n for x in self.holding()}
        await self.scheduler.release_handle(c.handle)
        raced = [x for x in self.holding() if x.n not in before and not x.entered]
        for x in raced:
            assert x.task is not None
            x.task.cancel()
            x.raced = True
        await self.settle()
        for x in raced:  # the slot was handed on through a release; the body never ran
            assert x.task is not None and x.task.cancelled()
            assert x.status == "released" and not x.entered
        return raced

    async def cancel_waiter_then_release(self, waiter: Call, holder: Call) -> None:
        """Cancel a waiter and, before its task can run, release a slot it might have won."""
        assert waiter.status == "waiting" and holder.split and holder.handle is not None
        assert waiter.task is not None
        waiter.task.cancel()
        waiter.status = "cancelling"
        await self.scheduler.release_handle(holder.handle)
        await self.settle()
        assert waiter.task.cancelled() and not waiter.entered
        waiter.status = "cancelled"

    async def cancel(self, c: Call) -> None:
        assert c.task is not None
        if c.status == "waiting":
            c.task.cancel()
            c.status = "cancelled"
        elif c.status == "holding" and not c.split:
            c.task.cancel()  # the body is cancelled; the release comes from __aexit__
        await self.settle()

    async def advance(self, seconds: float) -> None:
        now = self.clock.now() + seconds
        for c in self.waiting():
            if c.timeout is not None and c.deadline <= now:
                c.status = "timed_out"
        self.clock.advance(seconds)
        await self.settle()

    async def set_capacity(self, capacity: int) -> None:
        self.capacity = capacity  # the hook checks grants against the new capacity
        self.resource.capacity = capacity
        await self.settle()

    async def shutdown(self) -> None:
        self.closed = True
        for c in self.waiting():
            c.status = "shutdown"
        await self.scheduler.shutdown()
        await self.settle()

    # -- invariants -----------------------------------------------------------------------

    def check(self) -> None:
        s = self.scheduler
        stats = s.statistics()
        holding = self.holding()
        waiting = self.waiting()
        assert self.resource.holders == len(holding) == stats.holders, "leaked or ghost slot"
        assert stats.waiters == len(waiting) == len(s.queue()), "ghost waiter"
        assert s.tick == self.tick
        want_waiting: dict[str, int] = {}
        for c in waiting:
            want_waiting[c.agent] = want_waiting.get(c.agent, 0) + 1
        assert stats.waiters_by_agent == want_waiting
        assert s.queue().waiting_by_agent() == want_waiting
        active = {c.agent for c in holding} | set(want_waiting)
        assert stats.tracked_agents == len(active), "per-agent state outlived its agent"
        if waiting:
            assert len(holding) >= self.capacity, "a free slot while requests wait"
        for c in self.calls:
            task = c.task
            if task is not None and task.done() and not task.cancelled():
                exc = task.exception()
                if exc is not None:
                    raise exc
            if c.status == "timed_out":
                assert c.task is not None
                if c.task.done():
                    assert isinstance(c.error, TimeoutError)
            if c.status == "shutdown" and c.task is not None and c.task.done():
                assert isinstance(c.error, ShutdownError) and not c.entered

    async def drain(self) -> None:
        """Keep releasing until nobody waits: every waiter must get its turn."""
        for _ in range(len(self.calls) + 2):
            holders = self.holding()
            if not holders and not self.waiting():
                break
            for c in holders:
                await self.finish(c, fail=False)
            self.check()
        assert not self.waiting(), "waiters left behind while releases continued"
        assert not self.holding()
        for c in self.calls:
            assert c.status not in ("waiting", "holding")
