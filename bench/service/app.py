"""The agents the service benchmark's worker processes run (``corral worker
bench.service.app:app``); the database comes from $CORRAL_DATABASE_URL."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from corral import Corral, RunContext

app = Corral(os.environ.get("CORRAL_DATABASE_URL", "sqlite:///corral-bench.db"), lease_ttl=10)


@app.agent("work")
async def work(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
    """Stands in for an agent waiting on an LLM: ``seconds`` of waiting, with a journal event
    every ``every`` seconds (fenced writes, as a real agent's steps would be)."""
    seconds = float(input.get("seconds", 0))
    every = float(input.get("every", 1.0))
    steps = int(seconds // every) if every > 0 else 0
    for i in range(steps):
        await asyncio.sleep(every)
        await ctx.emit("progress", {"step": i})
    await asyncio.sleep(max(0.0, seconds - steps * every))
    return {"steps": steps}
