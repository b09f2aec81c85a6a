"""Reproduce, on loco-agent 0.4.0 itself, the defects listed in docs/contention.md.

    bench/contention/.venv/bin/python bench/contention/loco_defects.py   # after run.sh once

Each check drives real loco with short real-time pauses (this is a demonstration, not a
test: corral's own tests show corral's behaviour with a fake clock). Expected output: every
line says DEFECT. corral's counterpart of each check is a test in
tests/unit/contention/test_scheduler.py.
"""

from __future__ import annotations

import asyncio

from loco import Agent, AsyncLOCOScheduler, SharedResource, Task


def make(capacity: int = 1) -> tuple[AsyncLOCOScheduler, SharedResource]:
    resource = SharedResource("llm", capacity=capacity)
    agents = [Agent(agent_id=a) for a in ("a", "b", "c", "w", "x")]
    return AsyncLOCOScheduler(agents, resource), resource


def report(name: str, defect: bool, detail: str) -> None:
    print(f"{'DEFECT' if defect else 'ok    '}  {name}: {detail}")


async def body_exception() -> None:
    s, r = make()
    for agent in "ab":
        await s.submit_task(agent, Task())
    entered: list[str] = []

    async def failing() -> None:
        async with s.acquire("a"):
            await asyncio.sleep(0.01)
            raise RuntimeError("the call failed")

    async def waiting() -> None:
        async with s.acquire("b"):
            entered.append("b")

    first = asyncio.create_task(failing())
    await asyncio.sleep(0)
    second = asyncio.create_task(waiting())
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.sleep(0.1)
    report(
        "exception in the body",
        not entered,
        f"slot free (holders={r.holder_count}) but the waiter was not woken",
    )
    second.cancel()


async def lowered_capacity() -> None:
    s, r = make(3)
    await s.submit_task("w", Task())
    handles = [await s.acquire_start(a) for a in "abc"]
    waiter = asyncio.create_task(s.acquire_start("w"))
    await asyncio.sleep(0)
    r.capacity = 1
    await s.release_handle(handles[0])
    await asyncio.sleep(0.01)
    report(
        "lowered capacity",
        waiter.done() and r.holder_count > r.capacity,
        f"granted anyway: holders={r.holder_count}, capacity={r.capacity}",
    )


async def shutdown() -> None:
    s, r = make()
    await s.submit_task("b", Task())
    holder = await s.acquire_start("a")
    inside: list[int] = []

    async def waiting() -> None:
        async with s.acquire("b"):
            inside.append(r.holder_count)

    tasks = [asyncio.create_task(waiting())]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(s.shutdown(timeout=0.05)))
    await asyncio.sleep(0.01)
    report(
        "shutdown",
        bool(inside),
        f"a waiter ran its body with holders={inside} (only the original holder counted)",
    )
    await s.release_handle(holder)
    await asyncio.gather(*tasks, return_exceptions=True)


async def timeout_wakes_sibling() -> None:
    s, r = make()
    for _ in range(2):
        await s.submit_task("a", Task())
    holder = await s.acquire_start("x")
    inside: list[int] = []

    async def impatient() -> None:
        try:
            async with s.acquire("a", timeout=0.02):
                pass
        except TimeoutError:
            pass

    async def sibling() -> None:
        async with s.acquire("a"):
            inside.append(r.holder_count)
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(impatient()), asyncio.create_task(sibling())]
    await asyncio.sleep(0.04)
    report(
        "timeout",
        bool(inside),
        f"the sibling entered while x still held the only slot (holders={inside})",
    )
    await s.release_handle(holder)
    await asyncio.gather(*tasks, return_exceptions=True)


async def grant_cancel_race() -> None:
    s, r = make()
    await s.submit_task("b", Task())
    holder = await s.acquire_start("a")
    waiter = asyncio.create_task(s.acquire_start("b"))
    await asyncio.sleep(0)
    await s.release_handle(holder)  # grants b
    waiter.cancel()  # before b resumes
    await asyncio.gather(waiter, return_exceptions=True)
    report(
        "grant racing a cancellation",
        r.holder_count > 0,
        f"nobody holds anything, yet holders={r.holder_count}: the slot leaked",
    )


async def main() -> None:
    for check in (
        body_exception,
        lowered_capacity,
        shutdown,
        timeout_wakes_sibling,
        grant_cancel_race,
    ):
        await check()


if __name__ == "__main__":
    asyncio.run(main())
