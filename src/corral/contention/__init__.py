"""In-process, load-aware contention scheduling for shared capacity (an LLM API, a GPU, a tool).

    resource = SharedResource("llm", capacity=3)
    scheduler = Scheduler(resource, alpha=0.25, max_waiters=100)
    async with scheduler.acquire("agent-7", weight=2.0) as handle:
        ...  # call the LLM

See docs/contention.md for the score, its edge cases and the design.
"""

from corral.contention.budget import Budget, BudgetAlert, BudgetMode
from corral.contention.clock import Clock, LoopClock, ManualClock
from corral.contention.handle import AcquireHandle
from corral.contention.resource import SharedResource
from corral.contention.scheduler import Scheduler
from corral.contention.score import AgentLoad, choose, load_scores
from corral.contention.statistics import ResourceStatistics, SchedulerStatistics, ShutdownReport
from corral.contention.wait_queue import Request, WaitQueue

__all__ = [
    "AcquireHandle",
    "AgentLoad",
    "Budget",
    "BudgetAlert",
    "BudgetMode",
    "Clock",
    "LoopClock",
    "ManualClock",
    "Request",
    "ResourceStatistics",
    "Scheduler",
    "SchedulerStatistics",
    "SharedResource",
    "ShutdownReport",
    "WaitQueue",
    "choose",
    "load_scores",
]
