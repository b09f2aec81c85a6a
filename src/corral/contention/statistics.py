"""Snapshots of a scheduler's state, for dashboards, metrics and tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ResourceStatistics:
    name: str
    capacity: int
    holders: int
    waiters: int
    tick: int


@dataclass(frozen=True, slots=True)
class SchedulerStatistics:
    """``statistics()`` of a :class:`corral.contention.Scheduler` at one instant.

    ``holders``/``waiters`` count acquires (a multi-resource acquire counts once). Waits are
    measured from admission to grant, in seconds on the scheduler's clock and in ticks; an
    acquire granted at once waited 0.
    """

    holders: int
    waiters: int
    holders_by_agent: dict[str, int]
    waiters_by_agent: dict[str, int]
    tick: int  #: tick of the first (primary) resource
    grants: int
    rejections: int  #: backpressure: wait queue (or one agent's share of it) full
    budget_rejections: int
    cancellations: int  #: cancelled while waiting, or after the grant before resuming
    timeouts: int
    shutdown_rejections: int  #: refused or woken because the scheduler shut down
    mean_wait: float
    max_wait: float
    mean_wait_ticks: float
    max_wait_ticks: int
    tracked_agents: int  #: agents with per-agent state (exactly those waiting or holding)
    resources: dict[str, ResourceStatistics] = field(default_factory=dict)
    spend: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    cancelled_waiters: int  #: waiters woken with ShutdownError
    active_holders: int  #: holders still running when shutdown() returned
