"""AcquireHandle: one acquire, from admission to release, as the caller sees it."""

from __future__ import annotations

import asyncio
from itertools import count
from typing import TYPE_CHECKING, Any

from corral.errors import InvalidInput

if TYPE_CHECKING:
    from corral.contention.clock import Timer
    from corral.contention.wait_queue import Request

NEW = 0  #: never granted (a handle made by hand is this forever)
WAITING = 1
GRANTED = 2
RELEASED = 3
WITHDRAWN = 4  #: cancelled, timed out, shut out or rejected while waiting

_STATE_NAMES = ("new", "waiting", "granted", "released", "withdrawn")
_ids = count(1)


class AcquireHandle:
    """Proof of a granted slot; release it with ``Scheduler.release_handle(handle)``.

    Release is by handle, never by agent id: releasing a handle twice, or one that was never
    granted (or that belongs to another scheduler), does nothing and advances no tick.

    ``request`` is the served request (agent, weight, arrival tick); ``requests`` has one per
    resource for a multi-resource acquire. ``downgrade`` is set when a budget in downgrade
    mode wants the holder to use its cheaper option; ``over_budget`` when the call went ahead
    over budget (alert or downgrade mode). Report actual usage with :meth:`report_usage`.
    """

    __slots__ = (
        "_future",
        "_lanes",
        "_owner",
        "_since",
        "_state",
        "_timer",
        "agent_id",
        "cost",
        "downgrade",
        "granted_tick",
        "handle_id",
        "over_budget",
        "requests",
        "resources",
        "usage",
        "weight",
    )

    def __init__(self, agent_id: str = "", *, weight: float = 1.0, cost: float = 0.0) -> None:
        self.agent_id = agent_id
        self.handle_id = next(_ids)
        self.weight = weight
        self.cost = cost  #: expected cost reserved against the agent's budget
        self.usage: float | None = None  #: actual usage reported so far
        self.downgrade = False
        self.over_budget = False
        self.resources: tuple[str, ...] = ()
        self.requests: tuple[Request, ...] = ()
        self.granted_tick = -1
        self._state = NEW
        self._owner: Any = None
        self._lanes: tuple[Any, ...] = ()
        self._future: asyncio.Future[None] | None = None
        self._timer: Timer | None = None
        self._since = 0.0

    @property
    def request(self) -> Request | None:
        """The served request (on the first resource); None for a handle never granted."""
        requests = self.requests
        if not requests:
            if self.granted_tick < 0:
                return None
            requests = self.requests = self._unqueued_requests()
        return requests[0]

    def _unqueued_requests(self) -> tuple[Request, ...]:
        # Granted at once on a single resource: built on demand, arrived and served at one tick.
        from corral.contention.wait_queue import Request

        return (Request(self.agent_id, self.weight, self.granted_tick, -1, -1, self),)

    @property
    def state(self) -> str:
        return _STATE_NAMES[self._state]

    @property
    def granted(self) -> bool:
        """Holding a slot now."""
        return self._state == GRANTED

    @property
    def released(self) -> bool:
        return self._state == RELEASED

    def report_usage(self, amount: float) -> None:
        """Add actual usage (tokens, dollars...) to be settled against the budget at release."""
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount >= 0:
            raise InvalidInput(f"usage must be a number >= 0, got {amount!r}")
        self.usage = (self.usage or 0.0) + float(amount)

    @classmethod
    def _made(
        cls,
        agent_id: str,
        weight: float,
        owner: Any,
        lanes: tuple[Any, ...],
        resources: tuple[str, ...],
        tick: int,
        state: int,
    ) -> AcquireHandle:
        """A scheduler's handle (hot path): every field set exactly once, no keyword parsing."""
        h = cls.__new__(cls)
        h.agent_id = agent_id
        h.handle_id = next(_ids)
        h.weight = weight
        h.cost = 0.0
        h.usage = None
        h.downgrade = False
        h.over_budget = False
        h.resources = resources
        h.requests = ()
        h.granted_tick = tick
        h._state = state
        h._owner = owner
        h._lanes = lanes
        h._future = None
        h._timer = None
        h._since = 0.0
        return h

    def __repr__(self) -> str:
        return (
            f"AcquireHandle(agent_id={self.agent_id!r}, handle_id={self.handle_id}, "
            f"state={self.state!r})"
        )
