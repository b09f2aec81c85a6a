"""One writer process for ``bench/sqlite/lock_wait.py``: submits batches of ``BATCH`` runs
back to back until terminated, then prints how many it submitted.

``python lock_writer.py DATABASE_URL BATCH POLL`` (POLL: seconds between tries for the write
lock, or ``none`` for SQLite's own busy handler)."""

from __future__ import annotations

import asyncio
import signal
import sys

from corral.config import StoreConfig
from corral.models import RunSpec
from corral.store import create_store


async def main(url: str, batch: int, poll: float) -> None:
    store = create_store(url, StoreConfig(lock_poll=poll))
    await store.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    specs = [RunSpec("noop", tenant="writer") for _ in range(batch)]
    print("ready", flush=True)
    submitted = 0
    try:
        while not stop.is_set():
            await store.submit(specs)
            submitted += batch
    finally:
        await store.close()
    print(submitted, flush=True)


if __name__ == "__main__":
    poll = 0.0 if sys.argv[3] == "none" else float(sys.argv[3])
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), poll))
