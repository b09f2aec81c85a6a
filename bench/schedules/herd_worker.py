"""One worker process's schedule loop, for ``bench/schedules/herd.py``: the stored schedules
only, no leasing. Run with the corral source under test first on ``PYTHONPATH``;
``python herd_worker.py DATABASE_URL [TICK_BATCH]`` runs until terminated."""

from __future__ import annotations

import asyncio
import signal
import sys

from corral.config import StoreConfig
from corral.store import create_store
from corral.worker import schedules


async def main(url: str) -> None:
    store = create_store(url, StoreConfig())
    await store.open()
    loop = asyncio.create_task(schedules.schedule_loop(store, [], stored=True))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, loop.cancel)
    print("ready", flush=True)
    try:
        await loop
    except asyncio.CancelledError:
        pass
    finally:
        await store.close()


if __name__ == "__main__":
    if len(sys.argv) > 2:  # ticks per transaction, for trying other sizes
        schedules.TICK_BATCH = int(sys.argv[2])
    asyncio.run(main(sys.argv[1]))
