"""The app the fairness benchmark's workers import:
``corral worker bench.fairness.app:app --concurrency 8``.

Configured from the environment because the harness decides, per scenario, which store the
workers use and whether tenant fairness is on: ``BENCH_FAIRNESS_DSN`` (a PostgreSQL URL or
``sqlite:///path``), ``BENCH_FAIRNESS_MODE`` (``tenant`` or ``fifo``, the store's
``StoreConfig.fairness``) and ``BENCH_FAIRNESS_STAMPS`` (a directory; each worker process
appends to its own file there).

Every agent sleeps ``input["s"]`` seconds. At its start it records the wall-clock time and
the submit time the harness put in its input (taken just before the submit call), so queue
wait is measured from the client's submit to the agent's first instruction; at its end it
records the end time, from which the harness knows when slots were freed.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from corral import Corral, RunContext
from corral.config import StoreConfig

DSN = os.environ.get("BENCH_FAIRNESS_DSN", "sqlite:///bench-fairness.db")
MODE = os.environ.get("BENCH_FAIRNESS_MODE", "tenant")
STAMPS = os.environ.get("BENCH_FAIRNESS_STAMPS", ".")
#: the noisy tenant's "spread" variant submits over this many agents
AGENTS = 100

if MODE not in ("tenant", "fifo"):
    raise SystemExit(f"BENCH_FAIRNESS_MODE must be tenant or fifo, not {MODE!r}")
app = Corral(DSN, lease_ttl=30.0, config=StoreConfig(fairness=MODE))  # type: ignore[arg-type]
_log = None


def _write(line: str) -> None:
    global _log
    if _log is None:
        _log = open(os.path.join(STAMPS, f"stamps-{os.getpid()}.log"), "a", buffering=1)  # noqa: SIM115
    _log.write(line + "\n")


async def nap(ctx: RunContext, input: dict[str, Any]) -> None:
    started = time.time()
    _write(f"S {ctx.run_id} {ctx.tenant} {input['t']!r} {started!r} {ctx.attempt}")
    await asyncio.sleep(float(input["s"]))
    _write(f"E {ctx.run_id} {ctx.tenant} {time.time()!r}")


for _i in range(AGENTS):
    app.agent(f"nap{_i}")(nap)
