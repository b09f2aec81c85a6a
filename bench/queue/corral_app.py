"""The corral app the benchmark's worker imports:
``corral worker bench.queue.corral_app:app --concurrency N --lease-ttl 30``.

The store is read from ``BENCH_CORRAL_DSN`` (a PostgreSQL URL or ``sqlite:///path``), because the
worker process imports this module and the harness decides which store a scenario uses.
"""

from __future__ import annotations

import asyncio
import os

from bench.queue.common import dsn_for, write_stamp

from corral import Corral

DSN = os.environ.get("BENCH_CORRAL_DSN", dsn_for("bench_corral"))
LEASE_TTL = float(os.environ.get("BENCH_CORRAL_LEASE_TTL", "30"))

app = Corral(DSN, lease_ttl=LEASE_TTL)


@app.agent("noop")
async def noop(ctx, input):  # type: ignore[no-untyped-def]
    return None


@app.agent("stamp")
async def stamp(ctx, input):  # type: ignore[no-untyped-def]
    write_stamp(int(input["i"]))
    return None


@app.agent("sleep")
async def sleep(ctx, input):  # type: ignore[no-untyped-def]
    await asyncio.sleep(float(input["s"]))
    return None
