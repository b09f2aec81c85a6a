"""corral: durable, fair, bounded execution of AI agents."""

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
