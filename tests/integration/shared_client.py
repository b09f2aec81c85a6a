"""A process that contends for a shared resource, for tests/integration/test_shared_contention.py.

    python -m tests.integration.shared_client URL NAME CAPACITY MODE COUNT

MODE ``churn``: COUNT tasks acquire, hold 20-60 ms, release, repeatedly for ~3 s.
MODE ``hold``: acquire once, print "holding", then hold until killed.
"""

from __future__ import annotations

import asyncio
import random
import sys

from corral.contention.shared import SharedScheduler
from corral.store import create_store


async def main(url: str, name: str, capacity: int, mode: str, count: int) -> None:
    store = create_store(url)
    await store.open()
    llm = SharedScheduler(
        store, name, capacity=capacity, max_waiters=1000, lease_ttl=1.0, poll_interval=0.01
    )
    await llm.open()
    if mode == "hold":
        await llm.acquire_start("holder")
        print("holding", flush=True)
        await asyncio.sleep(3600)
        return

    async def task(i: int) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 3.0
        while loop.time() < end:
            async with llm.acquire(f"agent-{i % 5}", weight=1 + i % 3):
                await asyncio.sleep(random.uniform(0.02, 0.06))

    await asyncio.gather(*(task(i) for i in range(count)))
    await llm.close()
    await store.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])))
