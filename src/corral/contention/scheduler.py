"""Scheduler: asyncio waiting around the pure load-score choice of :class:`WaitQueue`.

Every decision -- who is next, what a budget allows -- is taken by the pure parts
(:mod:`wait_queue`, :mod:`budget`) through the state machine in :mod:`core`; this module
only parks callers on futures, wakes them, and reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial
from types import TracebackType

from corral.contention.core import SchedulerCore, resolve_future
from corral.contention.handle import GRANTED, WAITING, AcquireHandle
from corral.contention.resource import SharedResource
from corral.contention.statistics import ResourceStatistics, SchedulerStatistics, ShutdownReport
from corral.contention.wait_queue import WaitQueue
from corral.errors import ShutdownError


class _Acquire:
    """``async with scheduler.acquire(...) as handle``: releases on every way out."""

    __slots__ = ("_agent_id", "_cost", "_handle", "_resources", "_s", "_timeout", "_weight")

    def __init__(
        self,
        s: Scheduler,
        agent_id: str,
        weight: float,
        timeout: float | None,
        cost: float | None,
        resources: Sequence[str] | None,
    ) -> None:
        self._s = s
        self._agent_id = agent_id
        self._weight = weight
        self._timeout = timeout
        self._cost = cost
        self._resources = resources

    async def __aenter__(self) -> AcquireHandle:
        s = self._s
        h = None
        if self._resources is None and self._cost is None:
            h = s._grant_now(self._agent_id, self._weight)
        if h is None:
            h = s._admit(self._agent_id, self._weight, self._timeout, self._cost, self._resources)
            if h._state != GRANTED:
                # what _wait does, inline: this is the hot path of every contended acquire
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                s._enqueue(h, fut, self._timeout)
                try:
                    await fut
                except asyncio.CancelledError:
                    s._cancelled(h)
                    raise
        self._handle = h
        return h

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._s._release(self._handle, exc_type is not None)


class Scheduler(SchedulerCore):
    """Load-aware admission to one or more :class:`SharedResource`.

    ``alpha`` weighs queue load against age in the load score; ``max_waiters`` bounds the
    wait queue (a full queue raises :class:`BackpressureError` at once) and
    ``max_waiters_per_agent`` bounds one agent's share of it (the score rewards agents with
    many concurrent callers; this keeps one from taking the whole queue). ``budget``
    reserves each acquire's expected ``cost`` at grant and settles usage at release.
    ``clock`` is injected (timeouts, wait times); ``on_grant``/``on_release`` observe.
    See :mod:`corral.contention.core` for the grant step and multi-resource acquires.
    """

    # -- public API ------------------------------------------------------------------------

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def tick(self) -> int:
        """Logical time of the first resource: the number of releases it has seen."""
        return self._primary.queue.tick

    @property
    def resources(self) -> Mapping[str, SharedResource]:
        return {name: lane.resource for name, lane in self._lanes.items()}

    @property
    def closed(self) -> bool:
        return self._closed

    def acquire(
        self,
        agent_id: str,
        weight: float = 1.0,
        timeout: float | None = None,
        *,
        cost: float | None = None,
        resources: Sequence[str] | None = None,
    ) -> _Acquire:
        """``async with scheduler.acquire(agent_id) as handle:`` -- hold a slot for the block.

        ``resources`` names several of this scheduler's resources to take all-or-nothing
        (default: the first resource only). ``cost`` is the expected cost reserved against
        the agent's budget. Raises :class:`BackpressureError`, :class:`ShutdownError`,
        :class:`BudgetExceeded` or ``TimeoutError`` (after ``timeout`` seconds of waiting).
        """
        return _Acquire(self, agent_id, weight, timeout, cost, resources)

    async def acquire_start(
        self,
        agent_id: str,
        weight: float = 1.0,
        timeout: float | None = None,
        *,
        cost: float | None = None,
        resources: Sequence[str] | None = None,
    ) -> AcquireHandle:
        """Split form of :meth:`acquire`: returns a granted handle for :meth:`release_handle`."""
        if resources is None and cost is None:
            fast = self._grant_now(agent_id, weight)
            if fast is not None:
                return fast
        h = self._admit(agent_id, weight, timeout, cost, resources)
        if h._state != GRANTED:
            await self._wait(h, timeout)
        return h

    async def release_handle(
        self, handle: AcquireHandle, *, usage: float | None = None, failed: bool = False
    ) -> None:
        """Release by handle. A handle released before, or never granted here, is a no-op.
        A ``usage`` that is not a number >= 0 is InvalidInput, raised after the slot is given
        back: a release is mostly called from ``finally``, where a refusal that kept the slot
        would hold it for good."""
        try:
            if usage is not None and handle._state == GRANTED and handle._owner is self:
                handle.report_usage(usage)
        finally:
            self._release(handle, failed)

    async def shutdown(
        self,
        *,
        wait: bool = False,
        timeout: float | None = None,
    ) -> ShutdownReport:
        """Refuse new acquires, wake every waiter with :class:`ShutdownError`.

        Holders keep their slots and release normally. With ``wait=True``, also wait (up to
        ``timeout`` seconds, if given) until the last holder has released.
        """
        self._closed = True
        woken: list[AcquireHandle] = []
        for lane in self._lane_list:
            for req in list(lane.queue.requests()):
                h: AcquireHandle = req.owner
                if h._state == WAITING:
                    self._withdraw(h, pump=False)
                    woken.append(h)
                    self._shutdown_rejections += 1
                    fut = h._future
                    if fut is not None and not fut.done():
                        fut.set_exception(ShutdownError("scheduler is shutting down"))
        if wait and self._holding:
            drained = self._drained
            if drained is None:
                drained = self._drained = asyncio.get_running_loop().create_future()
            timer = None
            waited: asyncio.Future[None] = drained
            if timeout is not None:
                # the timeout ends this call's wait only: ``drained`` is shared by every
                # shutdown(wait=True), and one without a timeout must still wait for the last
                # holder
                waited = asyncio.get_running_loop().create_future()
                timer = self._clock.call_later(timeout, partial(resolve_future, waited))
                drained.add_done_callback(lambda _: resolve_future(waited))
            try:
                await asyncio.shield(waited)
            finally:
                if timer is not None:
                    timer.cancel()
        return ShutdownReport(cancelled_waiters=len(woken), active_holders=self._holding)

    def statistics(self) -> SchedulerStatistics:
        grants = self._grants
        return SchedulerStatistics(
            holders=self._holding,
            waiters=self._waiting,
            holders_by_agent={a: c.holding for a, c in self._agents.items() if c.holding},
            waiters_by_agent={a: c.waiting for a, c in self._agents.items() if c.waiting},
            tick=self.tick,
            grants=grants,
            rejections=self._rejections,
            budget_rejections=self._budget_rejections,
            cancellations=self._cancellations,
            timeouts=self._timeouts,
            shutdown_rejections=self._shutdown_rejections,
            mean_wait=self._wait_total / grants if grants else 0.0,
            max_wait=self._wait_max,
            mean_wait_ticks=self._wait_ticks_total / grants if grants else 0.0,
            max_wait_ticks=self._wait_ticks_max,
            tracked_agents=len(self._agents),
            resources={
                lane.name: ResourceStatistics(
                    lane.name,
                    lane.resource.capacity,
                    lane.resource.holders,
                    len(lane.queue),
                    lane.queue.tick,
                )
                for lane in self._lane_list
            },
            spend=self.budget.spend() if self.budget is not None else {},
        )

    def queue(self, resource: str | None = None) -> WaitQueue:
        """The wait queue of a resource (default: the first), for introspection."""
        return (self._primary if resource is None else self._lane(resource)).queue

    # -- waiting ---------------------------------------------------------------------------

    async def _wait(self, h: AcquireHandle, timeout: float | None) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(h, fut, timeout)
        try:
            await fut
        except asyncio.CancelledError:
            self._cancelled(h)
            raise


__all__ = ["Scheduler"]
