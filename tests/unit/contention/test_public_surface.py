"""The public names of corral.contention and corral.compat.loco (STYLE habit 12)."""

from __future__ import annotations

import corral.compat.loco as loco
import corral.contention as contention

CONTENTION = {
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
}

LOCO_CORE = {
    "OPTIMIZE_FOR_ALPHA",
    "AcquireHandle",
    "Agent",
    "AsyncLOCOScheduler",
    "BackpressureError",
    "SharedResource",
    "ShutdownError",
    "Task",
}


def test_contention_exports_exactly_its_public_names() -> None:
    assert set(contention.__all__) == CONTENTION
    for name in CONTENTION:
        assert getattr(contention, name) is not None


def test_loco_compat_exports_loco_core_names() -> None:
    assert set(loco.__all__) == LOCO_CORE
    assert loco.AcquireHandle is contention.AcquireHandle
    assert issubclass(loco.SharedResource, contention.SharedResource)
