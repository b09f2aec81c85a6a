"""PgQueuer worker factory, started by the harness as ``pgq run bench.queue.pgq_app:create``.

Settings come from the environment (the harness sets them):
  BENCH_PGQ_DSN                 database to use
  BENCH_PGQ_ENTRYPOINT_LIMIT    ``concurrency_limit`` of the ``noop`` entrypoint (0 = unlimited)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from bench.queue.common import write_stamp
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    # PgQueuer's performance guide: a dedicated asyncpg connection for the QueueManager.
    conn = await asyncpg.connect(os.environ["BENCH_PGQ_DSN"])
    try:
        yield _build(PgQueuer(AsyncpgDriver(conn)))
    finally:
        await conn.close()


def _build(pgq: PgQueuer) -> PgQueuer:
    limit = int(os.environ.get("BENCH_PGQ_ENTRYPOINT_LIMIT", "0"))

    @pgq.entrypoint("noop", concurrency_limit=limit)
    async def noop(job: Job) -> None:
        return None

    @pgq.entrypoint("stamp")
    async def stamp(job: Job) -> None:
        write_stamp(int(job.payload or b"-1"))

    @pgq.entrypoint("sleep")
    async def sleep(job: Job) -> None:
        await asyncio.sleep(float(job.payload or b"1"))

    return pgq


def main() -> None:
    """``python -m bench.queue.pgq_app --batch-size N [--max-concurrent-tasks M]``.

    The same as ``pgq run bench.queue.pgq_app:create ...`` (uvloop, the supervisor, signal
    handling), through ``pgqueuer.run``: pgqueuer 1.6.0's ``pgq run`` fails at start-up with the
    installed typer (``setup_fancy_logger`` receives a ``str`` log level: AttributeError).
    """
    import argparse
    from datetime import timedelta

    import pgqueuer
    import uvloop
    from pgqueuer.core import logconfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--max-concurrent-tasks", type=int, default=None)
    ap.add_argument("--dequeue-timeout", type=float, default=30.0)
    a = ap.parse_args()
    logconfig.setup_fancy_logger(logconfig.LogLevel.WARNING)
    uvloop.run(
        pgqueuer.run(
            "bench.queue.pgq_app:create",
            batch_size=a.batch_size,
            max_concurrent_tasks=a.max_concurrent_tasks,
            dequeue_timeout=timedelta(seconds=a.dequeue_timeout),
        )
    )


if __name__ == "__main__":
    main()
