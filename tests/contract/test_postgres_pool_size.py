"""A PostgreSQL URL's ``pool_size`` bounds each of a process's pools, and a store so bounded
still leases, acks and serves reads while a worker runs (real server, never skipped)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import Corral, RunContext
from tests.support.postgres import fresh_schema

pytestmark = pytest.mark.timeout(60)


async def test_a_postgresql_url_with_pool_size_one_works(pg_dsn: str) -> None:
    with fresh_schema(pg_dsn) as dsn:
        app = Corral(dsn + ("&" if "?" in dsn else "?") + "pool_size=1")

        @app.agent("echo")
        async def echo(ctx: RunContext, input: Any) -> Any:
            await ctx.step("twice", lambda: input * 2)
            return input

        try:
            assert app.store.config.pool_size == 1  # type: ignore[attr-defined]
            run_ids = [await app.submit("echo", n) for n in range(10)]
            worker = app.worker(concurrency=4, poll_interval=0.02)
            await asyncio.wait_for(worker.run(until_idle=True), 30)
            assert [(await app.get(r)).result for r in run_ids] == list(range(10))
            assert (await app.stats()).by_status == {"succeeded": 10}
        finally:
            await app.close()
