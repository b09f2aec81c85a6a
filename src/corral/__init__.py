"""corral: durable, fair, bounded execution of AI agents."""

from corral.app import Corral
from corral.config import PlanSpec, StoreConfig
from corral.contention import AcquireHandle, Scheduler, SharedResource
from corral.contention.shared import SharedScheduler
from corral.errors import (
    BackpressureError,
    BudgetExceeded,
    ChildRunFailed,
    CorralError,
    FanoutLimitError,
    InvalidInput,
    LeaseLost,
    NonDeterminismError,
    RunNotFound,
    ScheduleExists,
    ScheduleLimitReached,
    ScheduleNotFound,
    ShutdownError,
    StepFailed,
    StoreUnavailable,
    UnknownAgent,
)
from corral.models import (
    QueueStats,
    Run,
    RunSpec,
    RunStatus,
    TenantStats,
    WorkerPresence,
    WorkerState,
)
from corral.runs import FanoutLimits, RunContext, StepPolicy
from corral.worker import NonRetryableError, Worker

__all__ = [
    "AcquireHandle",
    "BackpressureError",
    "BudgetExceeded",
    "ChildRunFailed",
    "Corral",
    "CorralError",
    "FanoutLimitError",
    "FanoutLimits",
    "InvalidInput",
    "LeaseLost",
    "NonDeterminismError",
    "NonRetryableError",
    "PlanSpec",
    "QueueStats",
    "Run",
    "RunContext",
    "RunNotFound",
    "RunSpec",
    "RunStatus",
    "ScheduleExists",
    "ScheduleLimitReached",
    "ScheduleNotFound",
    "Scheduler",
    "SharedResource",
    "SharedScheduler",
    "ShutdownError",
    "StepFailed",
    "StepPolicy",
    "StoreConfig",
    "StoreUnavailable",
    "TenantStats",
    "UnknownAgent",
    "Worker",
    "WorkerPresence",
    "WorkerState",
]
