"""An in-process worker for the tests that need one run carried to its end."""

from __future__ import annotations

import asyncio
from typing import Any

from corral import Corral, Run


async def work_until_ended(app: Corral, run_id: str, *, timeout: float, **worker: Any) -> Run:
    """Run a worker of ``app`` (``worker``: its options) until ``run_id`` has ended; the run."""
    (run,) = await work_until_all_ended(app, [run_id], timeout=timeout, **worker)
    return run


async def work_until_all_ended(
    app: Corral, run_ids: list[str], *, timeout: float, **worker: Any
) -> list[Run]:
    """Run a worker of ``app`` until every run of ``run_ids`` has ended (each within
    ``timeout`` seconds of the one before); the runs, in that order."""
    running_worker = app.worker(**{"poll_interval": 0.05, **worker})
    running = asyncio.create_task(running_worker.run())
    try:
        return [await app.wait(run_id, timeout=timeout) for run_id in run_ids]
    finally:
        running_worker.stop()
        await running
