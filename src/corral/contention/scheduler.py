"""Scheduler: asyncio waiting around the pure load-score choice of :class:`WaitQueue`.

Every decision -- who is next, what a budget allows -- is taken by the pure parts
(:mod:`wait_queue`, :mod:`budget`); this module only parks callers on futures and wakes them.

The grant step
--------------
A resource (a *lane*: the resource plus its wait queue) grants while it has a free slot and
waiters: the queue's best request is granted -- its slot is counted at once, before the
waiter resumes, so a grant can never race a release. A waiter cancelled after its grant but
before it resumed hands the slot on through an ordinary release. A release (of any kind)
advances the lane's tick by one, which ages every waiting request there. An acquire is
granted at once only if a slot is free and nobody waits (no barging).

Multi-resource acquires are all-or-nothing: the acquire waits in the queue of each of its
resources, scored there like any single acquire, and is granted -- one slot on every
resource at the same instant -- when it is the best request of one of its lanes while every
one of its lanes has a free slot. If a lane's best request cannot be granted yet, that lane
grants nobody else (free slots stay free for it), so a wide acquire cannot be starved by
narrow ones; nothing is ever held while blocked, and since a lane is only blocked by lanes
that are full of running holders, every release makes progress possible: no deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType

from corral.contention.budget import Budget, Verdict
from corral.contention.clock import Clock, LoopClock
from corral.contention.handle import GRANTED, RELEASED, WAITING, WITHDRAWN, AcquireHandle
from corral.contention.resource import SharedResource
from corral.contention.score import DEFAULT_ALPHA, check_alpha, check_weight
from corral.contention.statistics import ResourceStatistics, SchedulerStatistics, ShutdownReport
from corral.contention.wait_queue import Request, WaitQueue
from corral.errors import BackpressureError, BudgetExceeded, InvalidInput, ShutdownError


class _Lane:
    __slots__ = ("name", "queue", "resource")

    def __init__(self, resource: SharedResource, alpha: float) -> None:
        self.name = resource.name
        self.resource = resource
        self.queue = WaitQueue(alpha)


class _AgentCount:
    __slots__ = ("holding", "waiting")

    def __init__(self) -> None:
        self.waiting = 0
        self.holding = 0


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
                await s._wait(h, self._timeout)
        self._handle = h
        return h

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._s._release(self._handle, exc_type is not None)


class Scheduler:
    """Load-aware admission to one or more :class:`SharedResource` (see module docstring).

    ``alpha`` weighs queue load against age in the load score; ``max_waiters`` bounds the
    wait queue (a full queue raises :class:`BackpressureError` at once) and
    ``max_waiters_per_agent`` bounds one agent's share of it (the score rewards agents with
    many concurrent callers; this keeps one from taking the whole queue).
    """

    def __init__(
        self,
        resources: SharedResource | Iterable[SharedResource],
        *,
        alpha: float = DEFAULT_ALPHA,
        max_waiters: int = 100,
        max_waiters_per_agent: int | None = None,
        budget: Budget | None = None,
        retry_after: float = 1.0,
        clock: Clock | None = None,
        on_grant: Callable[[AcquireHandle], object] | None = None,
        on_release: Callable[[AcquireHandle], object] | None = None,
    ) -> None:
        self._alpha = check_alpha(alpha)
        if isinstance(resources, SharedResource):
            resources = [resources]
        lanes = [_Lane(r, self._alpha) for r in resources]
        if not lanes:
            raise InvalidInput("a scheduler needs at least one resource")
        self._lanes = {lane.name: lane for lane in lanes}
        if len(self._lanes) != len(lanes):
            raise InvalidInput("resource names must be distinct")
        for lane in lanes:
            lane.resource._bind(self._on_capacity)
        self._lane_list = tuple(lanes)
        self._primary = lanes[0]
        self._primary_only = (lanes[0],)
        self._primary_names = (lanes[0].name,)
        self._single = len(lanes) == 1
        self.max_waiters = _positive_int("max_waiters", max_waiters)
        self.max_waiters_per_agent = (
            None
            if max_waiters_per_agent is None
            else _positive_int("max_waiters_per_agent", max_waiters_per_agent)
        )
        self.budget = budget
        self.retry_after = retry_after
        self._clock: Clock = clock if clock is not None else LoopClock()
        self.on_grant = on_grant
        self.on_release = on_release
        self._agents: dict[str, _AgentCount] = {}
        self._waiting = 0
        self._holding = 0
        self._closed = False
        self._drained: asyncio.Future[None] | None = None
        self._grants = 0
        self._rejections = 0
        self._budget_rejections = 0
        self._cancellations = 0
        self._timeouts = 0
        self._shutdown_rejections = 0
        self._waited = 0  # grants that had to wait
        self._wait_total = 0.0
        self._wait_max = 0.0
        self._wait_ticks_total = 0
        self._wait_ticks_max = 0

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
        """Release by handle. A handle released before, or never granted here, is a no-op."""
        if usage is not None and handle._state == GRANTED and handle._owner is self:
            handle.report_usage(usage)
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
            if timeout is not None:
                timer = self._clock.call_later(timeout, partial(_resolve, drained))
            try:
                await asyncio.shield(drained)
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

    # -- admission -------------------------------------------------------------------------

    def _lane(self, name: str) -> _Lane:
        try:
            return self._lanes[name]
        except KeyError:
            raise InvalidInput(f"unknown resource {name!r}; known: {sorted(self._lanes)}") from None

    def _grant_now(self, agent_id: str, weight: float) -> AcquireHandle | None:
        """The uncontended path: one resource, no budget, a free slot and nobody waiting.

        Returns None whenever anything else applies; :meth:`_admit` then decides.
        """
        lane = self._primary
        res = lane.resource
        if (
            self._single
            and res._holders < res._capacity
            and not lane.queue._count
            and not self._closed
            and self.budget is None
            and weight.__class__ is float
            and weight >= 1.0
            and weight != _INF
        ):
            res._holders += 1
            h = AcquireHandle(agent_id, weight=weight)
            h._owner = self
            h._lanes = self._primary_only
            h.resources = self._primary_names
            h.granted_tick = lane.queue.tick
            h._state = GRANTED
            self._holding += 1
            self._grants += 1
            count = self._agents.get(agent_id)
            if count is None:
                count = self._agents[agent_id] = _AgentCount()
            count.holding += 1
            if self.on_grant is not None:
                self.on_grant(h)
            return h
        return None

    def _admit(
        self,
        agent_id: str,
        weight: float,
        timeout: float | None,
        cost: float | None,
        resources: Sequence[str] | None,
    ) -> AcquireHandle:
        """Refuse, grant at once, or return a NEW handle that must wait."""
        if self._closed:
            self._shutdown_rejections += 1
            raise ShutdownError("scheduler is shutting down")
        if weight.__class__ is not float or weight != 1.0:
            weight = check_weight(weight)
        lanes = self._primary_only if resources is None else self._resolve(resources)
        h = AcquireHandle(agent_id, weight=weight)
        h._owner = self
        h._lanes = lanes
        budget = self.budget
        if cost is not None:
            h.cost = check_cost(cost)
        if budget is not None and budget.exceeds(agent_id, h.cost) and budget.mode == "reject":
            self._budget_rejections += 1
            raise _budget_error(budget, agent_id, h.cost)
        if self._fits_now(lanes):
            if budget is not None:
                self._apply_verdict(h, budget.reserve(agent_id, h.cost))
            self._take(h)
            if len(lanes) > 1:
                h.requests = tuple(
                    Request(agent_id, weight, lane.queue.tick, -1, -1, h) for lane in lanes
                )
            return h
        if self._waiting >= self.max_waiters:
            self._rejections += 1
            raise BackpressureError(
                f"wait queue full ({self._waiting} >= max_waiters={self.max_waiters})",
                retry_after=self.retry_after,
            )
        limit = self.max_waiters_per_agent
        if limit is not None:
            count = self._agents.get(agent_id)
            if count is not None and count.waiting >= limit:
                self._rejections += 1
                raise BackpressureError(
                    f"agent {agent_id!r} already has {count.waiting} waiters "
                    f"(max_waiters_per_agent={limit})",
                    retry_after=self.retry_after,
                )
        if timeout is not None and timeout <= 0:
            self._timeouts += 1
            raise TimeoutError(f"no free slot for agent {agent_id!r} and timeout={timeout}")
        return h

    def _resolve(self, names: Sequence[str]) -> tuple[_Lane, ...]:
        if isinstance(names, str):
            names = (names,)
        wanted = {self._lane(n).name for n in names}
        if not wanted:
            raise InvalidInput("resources must name at least one resource")
        return tuple(lane for lane in self._lane_list if lane.name in wanted)

    def _fits_now(self, lanes: tuple[_Lane, ...]) -> bool:
        for lane in lanes:
            res = lane.resource
            if lane.queue._count or res._holders >= res._capacity:
                return False
        return True

    def _take(self, h: AcquireHandle) -> None:
        """Count ``h``'s slots and mark it granted (the handle is not queued anymore)."""
        for lane in h._lanes:
            lane.resource._holders += 1
        h.granted_tick = h._lanes[0].queue.tick
        h._state = GRANTED
        h.resources = (
            self._primary_names
            if h._lanes is self._primary_only
            else tuple(lane.name for lane in h._lanes)
        )
        self._holding += 1
        self._grants += 1
        count = self._agents.get(h.agent_id)
        if count is None:
            count = self._agents[h.agent_id] = _AgentCount()
        count.holding += 1
        if self.on_grant is not None:
            self.on_grant(h)

    def _apply_verdict(self, h: AcquireHandle, verdict: Verdict) -> None:
        if verdict is Verdict.DOWNGRADED:
            h.downgrade = True
            h.over_budget = True
        elif verdict is Verdict.ALERTED:
            h.over_budget = True

    # -- waiting ---------------------------------------------------------------------------

    async def _wait(self, h: AcquireHandle, timeout: float | None) -> None:
        # The timeout is a timer on the injected clock that withdraws exactly this request;
        # asyncio.timeout would cancel the task instead and race with a grant.
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        h._future = fut
        h._state = WAITING
        agent_id = h.agent_id
        h.requests = tuple(lane.queue.push(agent_id, h.weight, h) for lane in h._lanes)
        self._waiting += 1
        count = self._agents.get(agent_id)
        if count is None:
            count = self._agents[agent_id] = _AgentCount()
        count.waiting += 1
        clock = self._clock
        h._since = clock.now()
        if timeout is not None:
            h._timer = clock.call_later(timeout, partial(self._expire, h))
        try:
            await fut
        except asyncio.CancelledError:
            if h._state == GRANTED:
                # Granted, then cancelled before it could resume: hand the slot on.
                self._cancellations += 1
                self._release(h, True)
            elif h._state == WAITING:
                self._cancellations += 1
                self._withdraw(h)
            raise

    def _expire(self, h: AcquireHandle) -> None:
        if h._state != WAITING:
            return
        h._timer = None
        self._timeouts += 1
        self._withdraw(h)
        fut = h._future
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError(f"agent {h.agent_id!r} waited too long for a slot"))

    def _withdraw(self, h: AcquireHandle, pump: bool = True) -> None:
        """Take a waiting handle out of every queue: it leaves with no slot."""
        h._state = WITHDRAWN
        for lane, req in zip(h._lanes, h.requests, strict=True):
            lane.queue.remove(req)
        if h._timer is not None:
            h._timer.cancel()
            h._timer = None
        self._waiting -= 1
        count = self._agents[h.agent_id]
        count.waiting -= 1
        if not count.waiting and not count.holding:
            del self._agents[h.agent_id]
        if pump and not self._single:
            self._pump()  # it may have been what a lane was keeping its free slots for

    # -- granting --------------------------------------------------------------------------

    def _on_capacity(self, resource: SharedResource) -> None:
        self._pump()

    def _pump(self) -> None:
        if self._single:
            self._pump_lane(self._primary)
            return
        progress = True
        while progress:
            progress = False
            for lane in self._lane_list:
                if self._pump_lane(lane):
                    progress = True

    def _pump_lane(self, lane: _Lane) -> bool:
        queue = lane.queue
        res = lane.resource
        granted = False
        while queue._count and res._holders < res._capacity:
            req = queue.best()
            assert req is not None
            h: AcquireHandle = req.owner
            fut = h._future
            assert fut is not None
            if fut.done():
                # Its task was cancelled and has not run yet: it must not get a slot.
                self._cancellations += 1
                self._withdraw(h, pump=False)
                continue
            if len(h._lanes) > 1:
                for other in h._lanes:
                    o = other.resource
                    if o._holders >= o._capacity:
                        return granted  # keep this lane's free slots for h
            budget = self.budget
            if budget is not None:
                verdict = budget.reserve(h.agent_id, h.cost)
                if verdict is Verdict.REJECTED:
                    self._budget_rejections += 1
                    self._withdraw(h, pump=False)
                    fut.set_exception(_budget_error(budget, h.agent_id, h.cost))
                    continue
                self._apply_verdict(h, verdict)
            self._grant_waiting(h)
            granted = True
        return granted

    def _grant_waiting(self, h: AcquireHandle) -> None:
        for lane, req in zip(h._lanes, h.requests, strict=True):
            lane.queue.remove(req)
        if h._timer is not None:
            h._timer.cancel()
            h._timer = None
        self._waiting -= 1
        self._agents[h.agent_id].waiting -= 1
        waited = self._clock.now() - h._since
        self._waited += 1
        self._wait_total += waited
        if waited > self._wait_max:
            self._wait_max = waited
        self._take(h)
        ticks = h.granted_tick - h.requests[0].arrival
        self._wait_ticks_total += ticks
        if ticks > self._wait_ticks_max:
            self._wait_ticks_max = ticks
        fut = h._future
        assert fut is not None
        fut.set_result(None)

    # -- releasing -------------------------------------------------------------------------

    def _release(self, h: AcquireHandle, failed: bool) -> None:
        if h._state != GRANTED or h._owner is not self:
            return  # released before, never granted, or not ours: no-op, no tick
        h._state = RELEASED
        for lane in h._lanes:
            lane.resource._holders -= 1
            lane.queue.tick += 1
        self._holding -= 1
        count = self._agents[h.agent_id]
        count.holding -= 1
        if not count.holding and not count.waiting:
            del self._agents[h.agent_id]
        budget = self.budget
        if budget is not None:
            usage = h.usage
            if usage is None:
                usage = 0.0 if failed else h.cost
            budget.settle(h.agent_id, h.cost, usage)
        if self.on_release is not None:
            self.on_release(h)
        if self._drained is not None and not self._holding:
            _resolve(self._drained)
        self._pump()


_INF = float("inf")


def _positive_int(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{what} must be an integer >= 1, got {value!r}")
    return value


def check_cost(cost: float) -> float:
    if isinstance(cost, bool) or not isinstance(cost, int | float) or not cost >= 0:
        raise InvalidInput(f"cost must be a number >= 0, got {cost!r}")
    return float(cost)


def _budget_error(budget: Budget, agent_id: str, cost: float) -> BudgetExceeded:
    remaining = budget.remaining(agent_id)
    return BudgetExceeded(
        f"agent {agent_id!r} is over budget: expected cost {cost} > remaining {remaining}",
        requested=cost,
        remaining=remaining if remaining is not None else 0.0,
    )


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


__all__ = ["Scheduler"]
