"""The app the service tests run: in process (``build_app``) and in ``corral serve
--app tests.e2e.service_app:app`` processes (database from $CORRAL_DATABASE_URL or --db)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from corral import Corral, NonRetryableError, RunContext


def build_app(url: str) -> Corral:
    app = Corral(url, lease_ttl=5)

    @app.agent("echo")
    async def echo(ctx: RunContext, input: Any) -> Any:
        return input

    @app.agent("steps")
    async def steps(ctx: RunContext, input: dict[str, Any]) -> dict[str, Any]:
        """Emits ``n`` tick events, ``delay`` seconds apart."""
        n = int(input.get("n", 3))
        for i in range(n):
            await ctx.emit("tick", {"i": i})
            await asyncio.sleep(float(input.get("delay", 0)))
        return {"ticks": n}

    @app.agent("fail")
    async def fail(ctx: RunContext, input: Any) -> Any:
        raise NonRetryableError(f"asked to fail: {input!r}")

    @app.agent("fanout")
    async def fanout(ctx: RunContext, input: dict[str, Any]) -> list[Any]:
        """Spawns ``n`` echo children and returns their results."""
        n = int(input.get("n", 2))
        children = await ctx.spawn_many(
            [{"agent": "echo", "input": {"child": i}} for i in range(n)]
        )
        return await ctx.wait(children)

    # a schedule that never ticks while a test runs: the dashboard and /v1/schedules show it
    app.schedule(
        "new-year", "echo", {"greeting": "happy new year"}, cron="0 0 1 1 *", tenant="globex"
    )
    return app


app = build_app(os.environ.get("CORRAL_DATABASE_URL", "sqlite:///corral-e2e.db"))
