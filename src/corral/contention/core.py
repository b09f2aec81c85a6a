"""The scheduler's state machine: admit, grant, withdraw, release. Synchronous, no waiting.

Every decision -- who is next, what a budget allows -- is taken by the pure parts
(:mod:`wait_queue`, :mod:`budget`); this module keeps the counts and applies the decisions.

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
from collections.abc import Callable, Iterable, Sequence
from functools import partial

from corral.contention.budget import Budget, Verdict, check_cost, over_budget_error
from corral.contention.clock import Clock, LoopClock
from corral.contention.handle import GRANTED, NEW, RELEASED, WAITING, WITHDRAWN, AcquireHandle
from corral.contention.resource import SharedResource, check_count
from corral.contention.score import DEFAULT_ALPHA, check_alpha, check_weight
from corral.contention.wait_queue import Request, WaitQueue
from corral.errors import BackpressureError, InvalidInput, ShutdownError


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


class SchedulerCore:
    """State and transitions of a scheduler; :class:`Scheduler` adds the asyncio surface.

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
        self._lane_list = tuple(lanes)
        self._primary = lanes[0]
        self._primary_only = (lanes[0],)
        self._primary_names = (lanes[0].name,)
        self._single = len(lanes) == 1
        self.max_waiters = check_count("max_waiters", max_waiters)
        self.max_waiters_per_agent = (
            None
            if max_waiters_per_agent is None
            else check_count("max_waiters_per_agent", max_waiters_per_agent)
        )
        self.budget = budget
        self.retry_after = retry_after
        self._clock: Clock = clock if clock is not None else LoopClock()
        self._now = self._clock.now
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
        self._wait_total = 0.0
        self._wait_max = 0.0
        self._wait_ticks_total = 0
        self._wait_ticks_max = 0
        # Bind last, once everything is valid: a failed construction leaves resources free.
        taken = [lane.name for lane in lanes if lane.resource._listener is not None]
        if taken:
            raise InvalidInput(f"resources already belong to a scheduler: {taken}")
        for lane in lanes:
            lane.resource._bind(self._on_capacity)

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
            and 1.0 <= weight < _INF
        ):
            res._holders += 1
            h = AcquireHandle._made(
                agent_id,
                weight,
                self,
                self._primary_only,
                self._primary_names,
                lane.queue.tick,
                GRANTED,
            )
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
        if weight.__class__ is not float or not 1.0 <= weight < _INF:
            weight = check_weight(weight)
        lanes = self._primary_only if resources is None else self._resolve(resources)
        h = AcquireHandle._made(agent_id, weight, self, lanes, (), -1, NEW)
        budget = self.budget
        if cost is not None:
            h.cost = check_cost(cost)
        if budget is not None and budget.exceeds(agent_id, h.cost) and budget.mode == "reject":
            self._budget_rejections += 1
            raise over_budget_error(budget, agent_id, h.cost)
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
        if timeout is not None and not timeout > 0:
            if timeout != timeout:
                # a NaN deadline never comes due on a ManualClock (and holds up every timer
                # behind it) and comes due at once on the event loop's: refuse it
                raise InvalidInput("timeout must be a number of seconds or None, got nan")
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

    def _enqueue(self, h: AcquireHandle, fut: asyncio.Future[None], timeout: float | None) -> None:
        """Queue ``h`` on every resource it wants; ``fut`` resolves at grant or refusal.

        The timeout is a timer on the injected clock that withdraws exactly this request
        (asyncio.timeout would cancel the task instead, and race with a grant).
        """
        h._future = fut
        h._state = WAITING
        agent_id = h.agent_id
        lanes = h._lanes
        if len(lanes) == 1:
            h.requests = (lanes[0].queue.push(agent_id, h.weight, h),)
        else:
            h.requests = tuple(lane.queue.push(agent_id, h.weight, h) for lane in lanes)
        self._waiting += 1
        count = self._agents.get(agent_id)
        if count is None:
            count = self._agents[agent_id] = _AgentCount()
        count.waiting += 1
        h._since = self._now()
        if timeout is not None:
            h._timer = self._clock.call_later(timeout, partial(self._expire, h))

    def _cancelled(self, h: AcquireHandle) -> None:
        """The waiting task of ``h`` was cancelled (its CancelledError is re-raised)."""
        if h._state == GRANTED:
            # Granted, then cancelled before it could resume: hand the slot on.
            self._cancellations += 1
            self._release(h, True)
        elif h._state == WAITING:
            self._cancellations += 1
            self._withdraw(h)

    def _expire(self, h: AcquireHandle) -> None:
        if h._state != WAITING:
            return
        h._timer = None
        self._timeouts += 1
        self._withdraw(h)
        fut = h._future
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError(f"agent {h.agent_id!r} waited too long for a slot"))

    def _dequeue(self, h: AcquireHandle) -> None:
        lanes = h._lanes
        if len(lanes) == 1:
            lanes[0].queue.remove(h.requests[0])
        else:
            for lane, req in zip(lanes, h.requests, strict=True):
                lane.queue.remove(req)

    def _withdraw(self, h: AcquireHandle, pump: bool = True) -> None:
        """Take a waiting handle out of every queue: it leaves with no slot."""
        h._state = WITHDRAWN
        self._dequeue(h)
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
        # One pass suffices: a lane stops only when it is full or its best request needs a
        # lane that is full, and grants made later in the pass only fill lanes further.
        for lane in self._lane_list:
            self._pump_lane(lane)

    def _pump_lane(self, lane: _Lane) -> None:
        queue = lane.queue
        res = lane.resource
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
                        return  # keep this lane's free slots for h
            budget = self.budget
            if budget is not None:
                verdict = budget.reserve(h.agent_id, h.cost)
                if verdict is Verdict.REJECTED:
                    self._budget_rejections += 1
                    self._withdraw(h, pump=False)
                    fut.set_exception(over_budget_error(budget, h.agent_id, h.cost))
                    continue
                self._apply_verdict(h, verdict)
            self._grant_waiting(h)

    def _grant_waiting(self, h: AcquireHandle) -> None:
        self._dequeue(h)
        if h._timer is not None:
            h._timer.cancel()
            h._timer = None
        self._waiting -= 1
        self._agents[h.agent_id].waiting -= 1
        waited = self._now() - h._since
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
        lanes = h._lanes
        if len(lanes) == 1:
            lane = lanes[0]
            lane.resource._holders -= 1
            lane.queue.tick += 1
        else:
            for lane in lanes:
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
            resolve_future(self._drained)
        if self._waiting:
            self._pump()


_INF = float("inf")


def resolve_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
