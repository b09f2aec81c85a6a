"""The naive reference: a plain psycopg loop over one simple table.

Schema: ``jobs(id bigserial, payload jsonb, status text)``. The worker leases 100 rows per
statement (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 100) RETURNING``),
runs them as no-op coroutines at most ``--concurrency`` at a time, and acknowledges the whole
batch with one statement. No retries, no leases that expire, no fairness, no journal: it is
the floor of what one PostgreSQL round-trip per 100 jobs costs, not a usable queue.

Worker: ``python -m bench.queue.naive --dsn DSN --concurrency 32``; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id bigserial PRIMARY KEY,
    payload jsonb,
    status text NOT NULL DEFAULT 'queued'
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (id) WHERE status = 'queued';
"""

LEASE = """
UPDATE jobs SET status = 'running'
WHERE id IN (
    SELECT id FROM jobs WHERE status = 'queued' ORDER BY id
    FOR UPDATE SKIP LOCKED LIMIT %s
)
RETURNING id, payload
"""

ACK = "UPDATE jobs SET status = 'done' WHERE id = ANY(%s)"


async def run_worker(dsn: str, concurrency: int, batch: int, idle_poll: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sem = asyncio.Semaphore(concurrency)

    async def job(_payload: object) -> None:
        async with sem:
            return None

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            rows = await (await conn.execute(LEASE, (batch,))).fetchall()
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle_poll)
                continue
            await asyncio.gather(*(job(p) for _, p in rows))
            await conn.execute(ACK, ([r[0] for r in rows],))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--idle-poll", type=float, default=0.05)
    a = ap.parse_args()
    asyncio.run(run_worker(a.dsn, a.concurrency, a.batch, a.idle_poll))


if __name__ == "__main__":
    main()
