"""Procrastinate app, used by the harness (client side) and by the worker it starts with
``procrastinate --app=bench.queue.procrastinate_app.app worker --concurrency N``.

  BENCH_PROCRASTINATE_DSN        database to use
  BENCH_PROCRASTINATE_POOL_MAX   psycopg pool max_size (default 4, psycopg_pool's default)
"""

from __future__ import annotations

import asyncio
import os

import procrastinate
from bench.queue.common import dsn_for, write_stamp

DSN = os.environ.get("BENCH_PROCRASTINATE_DSN", dsn_for("bench_procrastinate"))
POOL_MAX = int(os.environ.get("BENCH_PROCRASTINATE_POOL_MAX", "4"))

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=DSN, min_size=min(4, POOL_MAX), max_size=POOL_MAX
    ),
)


@app.task(name="noop")
async def noop() -> None:
    return None


@app.task(name="stamp")
async def stamp(i: int) -> None:
    write_stamp(i)


@app.task(name="sleep")
async def sleep(s: float) -> None:
    await asyncio.sleep(s)
