"""The app the integration tests run in worker subprocesses (``corral worker
tests.integration.workload:app``). Every completion is appended to a file outside the store,
so the tests can count executions independently of what the store says."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from corral import Corral, RunContext

app = Corral(
    os.environ.get("CORRAL_DATABASE_URL", "sqlite:///corral-test.db"),
    lease_ttl=float(os.environ.get("CORRAL_TEST_TTL", "2")),
)


def record(line: str) -> None:
    # O_APPEND writes of one short line are atomic across processes
    with open(os.environ["CORRAL_TEST_LOG"], "a") as f:
        f.write(line + "\n")


@app.agent("work")
async def work(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(input.get("sleep", 0)))
    if input.get("emit"):
        await ctx.emit("finished", {"pid": os.getpid()})  # a fenced write
    record(f"done {ctx.run_id} {ctx.epoch} {os.getpid()}")
    return {"i": input.get("i"), "pid": os.getpid(), "epoch": ctx.epoch}


@app.agent("stubborn")
async def stubborn(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
    """In a worker started with CORRAL_TEST_STUBBORN set, an agent that swallows every
    cancellation and never ends; elsewhere, one that finishes at once."""
    if os.environ.get("CORRAL_TEST_STUBBORN"):
        record(f"stubborn {ctx.run_id} {os.getpid()}")
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                record(f"swallowed {ctx.run_id} {os.getpid()}")
    return {"pid": os.getpid(), "epoch": ctx.epoch}
