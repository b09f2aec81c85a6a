"""Run code written against ``loco`` (loco-agent 0.4) on corral's contention scheduler.

    from corral.compat.loco import Agent, AsyncLOCOScheduler, SharedResource, Task

covers loco's core: ``SharedResource``, ``Agent``, ``Task``, ``AsyncLOCOScheduler`` with
``submit_task``, ``acquire``, ``acquire_start``, ``release_handle``, ``shutdown``,
``get_agent``/``register_agent``/``unregister_agent``, ``AcquireHandle``,
``BackpressureError`` and ``ShutdownError``. This is an independent implementation of that
API; the scheduling underneath is corral's, and so are its fixes of loco's defects (body
exceptions, grant/cancel races, timeouts, shutdown, lowered capacity): see
docs/contention.md, "Differences from loco".

Mapping: an ``acquire(agent_id)`` is a corral request whose weight is that of the agent's
oldest submitted task (1.0 if it has none). As in loco, the tasks are the caller's: the body
calls ``get_agent(agent_id).serve_oldest_task()``; a task's ``age`` counts the scheduler's
ticks since it was submitted (computed on read, not by walking every task on each release).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

from corral.contention import AcquireHandle
from corral.contention import Scheduler as _Scheduler
from corral.contention import SharedResource as _CoreResource
from corral.errors import BackpressureError, InvalidInput, ShutdownError

OPTIMIZE_FOR_ALPHA = {"latency": 0.0, "balanced": 0.25, "throughput": 0.5}


class Task:
    """A unit of work queued to an agent (loco's ``Task``)."""

    def __init__(
        self,
        task_id: str | None = None,
        weight: float = 1.0,
        arrival_tick: int = 0,
        age: int = 0,
        task_type: str = "default",
        labels: dict[str, Any] | None = None,
        session_id: str | None = None,
        team: str | None = None,
        workflow: str | None = None,
        model: str | None = None,
    ) -> None:
        if not weight >= 1.0:
            raise InvalidInput(f"Task weight must be >= 1.0, got {weight}")
        self.task_id = task_id if task_id is not None else uuid4().hex[:12]
        self.weight = weight
        self.arrival_tick = arrival_tick
        self.task_type = task_type
        self.labels = labels
        self.session_id = session_id
        self.team = team
        self.workflow = workflow
        self.model = model
        self._age_base = age
        self._age_from = 0
        self._ticks: Callable[[], int] | None = None

    @property
    def age(self) -> int:
        """Ticks spent waiting in its agent's queue."""
        if self._ticks is None:
            return self._age_base
        return self._age_base + self._ticks() - self._age_from

    @age.setter
    def age(self, value: int) -> None:
        self._age_base = value
        if self._ticks is not None:
            self._age_from = self._ticks()

    def _start_aging(self, ticks: Callable[[], int]) -> None:
        self._age_base = self.age
        self._age_from = ticks()
        self._ticks = ticks

    def _stop_aging(self) -> None:
        self._age_base = self.age
        self._ticks = None

    def __repr__(self) -> str:
        return f"Task(task_id={self.task_id!r}, weight={self.weight}, age={self.age})"


class Agent:
    """An agent with a queue of submitted tasks (loco's ``Agent``)."""

    def __init__(
        self,
        agent_id: str,
        name: str = "",
        agent_type: str = "default",
        tasks: list[Task] | None = None,
        completed_tasks: list[Task] | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.name = name
        self.agent_type = agent_type
        self.tasks: list[Task] = tasks if tasks is not None else []
        self.completed_tasks: list[Task] = completed_tasks if completed_tasks is not None else []

    @property
    def queue_depth_weighted(self) -> float:
        """Qi of loco: the summed weight of the submitted, unserved tasks."""
        return sum(t.weight for t in self.tasks)

    @property
    def dmax(self) -> float:
        """Age of the oldest unserved task (0.0 if none)."""
        return float(max((t.age for t in self.tasks), default=0))

    def serve_oldest_task(self) -> Task | None:
        """Move the oldest task to ``completed_tasks`` and return it (None if none)."""
        if not self.tasks:
            return None
        oldest = max(self.tasks, key=lambda t: t.age)
        self.tasks.remove(oldest)
        oldest._stop_aging()
        self.completed_tasks.append(oldest)
        return oldest

    def __repr__(self) -> str:
        return f"Agent(agent_id={self.agent_id!r}, tasks={len(self.tasks)})"


class SharedResource(_CoreResource):
    """corral's SharedResource with loco's read-only views."""

    __slots__ = ("_compat",)

    def __init__(self, name: str, capacity: int = 1) -> None:
        super().__init__(name, capacity)
        self._compat: AsyncLOCOScheduler | None = None

    @property
    def utilization(self) -> float:
        return self.holders / self.capacity

    @property
    def available_slots(self) -> int:
        return self.capacity - self.holders

    @property
    def holder_count(self) -> int:
        return self.holders

    @property
    def waiter_count(self) -> int:
        return 0 if self._compat is None else self._compat._core.statistics().waiters

    def is_holding(self, agent_id: str) -> bool:
        if self._compat is None:
            return False
        return agent_id in self._compat._core.statistics().holders_by_agent


class AsyncLOCOScheduler:
    """loco's scheduler API, scheduled by :class:`corral.contention.Scheduler`."""

    def __init__(
        self,
        agents: Iterable[Agent],
        resource: _CoreResource,
        *,
        alpha: float | None = None,
        optimize_for: str | None = None,
        max_waiters: int = 100,
        seed: int | None = None,  # accepted for compatibility; corral's ties are deterministic
        on_task_started: Callable[[str, Task], None] | None = None,
        on_task_completed: Callable[[str, Task, Any], None] | None = None,
    ) -> None:
        if alpha is not None and optimize_for is not None:
            raise InvalidInput("Pass alpha or optimize_for, not both")
        if optimize_for is not None:
            if optimize_for not in OPTIMIZE_FOR_ALPHA:
                raise InvalidInput(
                    f"optimize_for must be one of {list(OPTIMIZE_FOR_ALPHA)}, got {optimize_for!r}"
                )
            alpha = OPTIMIZE_FOR_ALPHA[optimize_for]
        self.resource = resource
        self.max_waiters = max_waiters
        self.on_task_started = on_task_started
        self.on_task_completed = on_task_completed
        self._agents: dict[str, Agent] = {a.agent_id: a for a in agents}
        self._core = _Scheduler(
            resource,
            alpha=OPTIMIZE_FOR_ALPHA["balanced"] if alpha is None else alpha,
            max_waiters=max_waiters,
        )
        self._serving: dict[int, Task] = {}
        if isinstance(resource, SharedResource):
            resource._compat = self
        for agent in self._agents.values():
            self._adopt(agent)

    # -- loco's properties and agent registry ----------------------------------------------

    @property
    def agents(self) -> dict[str, Agent]:
        return self._agents

    @property
    def alpha(self) -> float:
        return self._core.alpha

    @property
    def logical_tick(self) -> int:
        return self._core.tick

    @property
    def scheduler(self) -> _Scheduler:
        """The corral scheduler underneath (statistics(), capacity changes, ...)."""
        return self._core

    def get_agent(self, agent_id: str) -> Agent:
        try:
            return self._agents[agent_id]
        except KeyError:
            raise InvalidInput(f"Unknown agent: {agent_id}") from None

    def register_agent(self, agent: Agent) -> None:
        if agent.agent_id in self._agents:
            raise InvalidInput(f"Agent already registered: {agent.agent_id}")
        self._agents[agent.agent_id] = self._adopt(agent)

    def unregister_agent(self, agent_id: str) -> Agent:
        self.get_agent(agent_id)
        stats = self._core.statistics()
        if agent_id in stats.holders_by_agent:
            raise RuntimeError(f"Cannot unregister {agent_id}: currently holding resource")
        if agent_id in stats.waiters_by_agent:
            raise RuntimeError(f"Cannot unregister {agent_id}: waiting for resource")
        return self._agents.pop(agent_id)

    def _adopt(self, agent: Agent) -> Agent:
        """Age the tasks an agent came with: loco ages every task queued to a registered
        agent on each release, not only those given to submit_task."""
        for task in agent.tasks:
            if task._ticks is None:
                task._start_aging(self._tick)
        return agent

    def _tick(self) -> int:
        return self._core.tick

    def _agent(self, agent_id: str) -> Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = self._agents[agent_id] = Agent(agent_id=agent_id)
        return agent

    async def submit_task(self, agent_id: str, task: Task) -> None:
        """Queue a task to an agent (registered on first contact)."""
        if self._core.closed:
            raise ShutdownError("Scheduler is shutting down")
        task._start_aging(self._tick)
        self._agent(agent_id).tasks.append(task)

    # -- acquiring and releasing --------------------------------------------------------------

    def _weight(self, agent: Agent) -> float:
        return agent.tasks[0].weight if agent.tasks else 1.0

    def _started(self, agent: Agent) -> Task | None:
        task = agent.tasks[0] if agent.tasks else None
        if task is not None and self.on_task_started is not None:
            self.on_task_started(agent.agent_id, task)
        return task

    def _completed(self, agent_id: str, task: Task | None) -> None:
        if task is not None and self.on_task_completed is not None:
            self.on_task_completed(agent_id, task, None)

    @asynccontextmanager
    async def acquire(
        self,
        agent_id: str,
        *,
        timeout: float | None = None,  # loco's signature
    ) -> AsyncIterator[None]:
        """Hold a slot for the block; released on every way out of it."""
        agent = self._agent(agent_id)
        async with self._core.acquire(agent_id, self._weight(agent), timeout):
            task = self._started(agent)
            try:
                yield
            finally:
                self._completed(agent_id, task)

    async def acquire_start(
        self,
        agent_id: str,
        *,
        timeout: float | None = None,  # loco's signature
    ) -> AcquireHandle:
        agent = self._agent(agent_id)
        handle = await self._core.acquire_start(agent_id, self._weight(agent), timeout)
        task = self._started(agent)
        if task is not None and self.on_task_completed is not None:
            self._serving[handle.handle_id] = task
        return handle

    async def release_handle(self, handle: AcquireHandle) -> None:
        """Release by handle; a second release (or a foreign handle) does nothing."""
        if handle.granted:
            self._completed(handle.agent_id, self._serving.pop(handle.handle_id, None))
        await self._core.release_handle(handle)

    async def shutdown(self, timeout: float = 30.0) -> dict[str, int]:
        """Refuse new work, wake waiters with ShutdownError, wait for holders (up to timeout)."""
        report = await self._core.shutdown(wait=True, timeout=timeout)
        return {
            "cancelled_waiters": report.cancelled_waiters,
            "active_holders": report.active_holders,
        }


__all__ = [
    "OPTIMIZE_FOR_ALPHA",
    "AcquireHandle",
    "Agent",
    "AsyncLOCOScheduler",
    "BackpressureError",
    "SharedResource",
    "ShutdownError",
    "Task",
]
