"""The app the SQLite checkpoint benchmark's worker imports:
``corral worker bench.sqlite.app:app --concurrency N``.

``BENCH_SQLITE_DSN`` names the database and ``BENCH_SQLITE_CHECKPOINT`` the store's
``StoreConfig.checkpoint_interval`` (0: SQLite's own auto-checkpoint inside commits), because
the harness decides both per round.
"""

from __future__ import annotations

import asyncio
import os

from corral import Corral, RunContext
from corral.config import StoreConfig

INTERVAL = float(os.environ.get("BENCH_SQLITE_CHECKPOINT", "0.05"))
app = Corral(
    os.environ.get("BENCH_SQLITE_DSN", "sqlite:///bench-sqlite.db"),
    lease_ttl=30.0,
    config=StoreConfig(checkpoint_interval=INTERVAL),
)


@app.agent("noop")
async def noop(ctx: RunContext, input: object) -> None:
    return None


@app.agent("sleep")
async def sleep(ctx: RunContext, input: dict[str, float]) -> None:
    await asyncio.sleep(float(input["s"]))
