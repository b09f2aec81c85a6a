"""The public surface is small and deliberate: adding or removing a name is a decision."""

from __future__ import annotations

import corral
import corral.errors

EXPECTED = {
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
    "SharedScheduler",
    "SharedResource",
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
}


def test_all_is_the_expected_surface() -> None:
    assert set(corral.__all__) == EXPECTED
    for name in corral.__all__:
        assert getattr(corral, name) is not None


def test_every_error_derives_from_the_root() -> None:
    for name in corral.errors.__all__:
        cls = getattr(corral.errors, name)
        if name not in ("NonRetryableError", "CorralError"):  # agents raise the first
            assert issubclass(cls, corral.errors.CorralError), name
            assert cls.code and cls.code != "corral_error", name
