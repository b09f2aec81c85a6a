"""corral: durable, fair, bounded execution of AI agents."""

from corral.app import Corral
from corral.config import PlanSpec, StoreConfig
from corral.models import QueueStats, Run, RunSpec, RunStatus, TenantStats
from corral.runs import RunContext
from corral.worker import NonRetryableError, Worker

from corral.errors import (
    BackpressureError,
    BudgetExceeded,
    CorralError,
    FanoutLimitError,
    InvalidInput,
    LeaseLost,
    NonDeterminismError,
    RunNotFound,
    ShutdownError,
    UnknownAgent,
)

__all__ = [
    "Corral",
    "NonRetryableError",
    "PlanSpec",
    "QueueStats",
    "Run",
    "RunContext",
    "RunSpec",
    "RunStatus",
    "StoreConfig",
    "TenantStats",
    "Worker",
    "BackpressureError",
    "BudgetExceeded",
    "CorralError",
    "FanoutLimitError",
    "InvalidInput",
    "LeaseLost",
    "NonDeterminismError",
    "RunNotFound",
    "ShutdownError",
    "UnknownAgent",
]
