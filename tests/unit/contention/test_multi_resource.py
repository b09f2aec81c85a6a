"""Several resources at once: all-or-nothing, nothing held while blocked, no hang."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.contention import AcquireHandle, ManualClock, Scheduler, SharedResource


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def trio(llm: int = 1, tool: int = 1, gpu: int = 1) -> Scheduler:
    return Scheduler(
        [SharedResource("llm", llm), SharedResource("tool", tool), SharedResource("gpu", gpu)],
        clock=ManualClock(),
    )


async def test_a_multi_acquire_holds_nothing_while_blocked_then_everything_at_once() -> None:
    s = trio()
    res = s.resources
    llm = await s.acquire_start("a", resources=["llm"])
    wide = asyncio.create_task(s.acquire_start("b", resources=["llm", "tool", "gpu"]))
    await settle()
    assert not wide.done()
    assert res["tool"].holders == 0 and res["gpu"].holders == 0  # nothing held while blocked
    await s.release_handle(llm)
    h = await wide
    assert h.resources == ("llm", "tool", "gpu") and len(h.requests) == 3
    assert all(r.holders == 1 for r in res.values())
    await s.release_handle(h)
    assert all(r.holders == 0 for r in res.values())
    assert {n: st.tick for n, st in s.statistics().resources.items()} == {
        "llm": 2,
        "tool": 1,
        "gpu": 1,
    }


async def test_free_slots_are_kept_for_a_blocked_wide_acquire() -> None:
    s = trio()
    llm = await s.acquire_start("a", resources=["llm"])
    wide = asyncio.create_task(s.acquire_start("b", resources=["llm", "gpu"]))
    await settle()
    narrow = asyncio.create_task(s.acquire_start("c", resources=["gpu"]))
    await settle()
    assert not narrow.done()  # gpu is free, but b waits for it: no barging, no starving b
    assert s.resources["gpu"].holders == 0
    await s.release_handle(llm)
    await settle()
    h = await wide
    assert not narrow.done()
    await s.release_handle(h)
    await s.release_handle(await narrow)
    tool_only = await s.acquire_start("d", resources=["tool"])  # an unrelated lane is unaffected
    assert tool_only.granted


async def test_crossing_wide_acquires_do_not_deadlock() -> None:
    s = trio()
    blockers = [await s.acquire_start("x", resources=[n]) for n in ("llm", "gpu")]
    ab = asyncio.create_task(s.acquire_start("p", resources=["llm", "gpu"]))
    ba = asyncio.create_task(s.acquire_start("q", resources=["gpu", "llm"]))
    await settle()
    for b in blockers:
        await s.release_handle(b)
    await settle()
    first = ab if ab.done() else ba
    await s.release_handle(await first)
    second = ba if first is ab else ab
    await s.release_handle(await second)
    assert all(r.holders == 0 for r in s.resources.values())


async def test_unknown_resource_names_are_invalid_input() -> None:
    s = trio()
    try:
        await s.acquire_start("a", resources=["disk"])
    except ValueError as e:
        assert "disk" in str(e)
    else:
        raise AssertionError("expected InvalidInput")


bundles = st.lists(st.sampled_from(["llm", "tool", "gpu"]), min_size=1, max_size=3, unique=True)


@settings(max_examples=150, deadline=None)
@given(
    caps=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2)),
    steps=st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 99), bundles), min_size=10, max_size=60
    ),
)
def test_random_multi_resource_schedules_never_exceed_capacity_and_never_hang(
    caps: tuple[int, int, int], steps: list[tuple[int, int, list[str]]]
) -> None:
    async def run() -> None:
        holding: dict[int, AcquireHandle] = {}
        tasks: dict[int, asyncio.Task[AcquireHandle]] = {}
        s: Scheduler

        def on_grant(h: AcquireHandle) -> None:
            for name in h.resources:
                r = s.resources[name]
                assert r.holders <= r.capacity, "over capacity"

        s = Scheduler(
            [
                SharedResource("llm", caps[0]),
                SharedResource("tool", caps[1]),
                SharedResource("gpu", caps[2]),
            ],
            clock=ManualClock(),
            max_waiters=1000,
            on_grant=on_grant,
        )

        def collect() -> None:
            for n, t in list(tasks.items()):
                if t.done() and not t.cancelled():
                    holding[n] = t.result()
                    del tasks[n]

        def check() -> None:
            collect()
            for name, r in s.resources.items():
                held = sum(1 for h in holding.values() if name in h.resources)
                assert r.holders == held, "a waiter holds part of its resources"
            assert s.statistics().waiters == len(tasks)

        for i, (kind, pick, bundle) in enumerate(steps):
            if kind < 6:
                tasks[i] = asyncio.create_task(
                    s.acquire_start(f"agent-{pick % 4}", resources=bundle)
                )
            elif kind < 9 and holding:
                n = sorted(holding)[pick % len(holding)]
                await s.release_handle(holding.pop(n))
            elif tasks:
                n = sorted(tasks)[pick % len(tasks)]
                tasks.pop(n).cancel()
            await settle()
            check()
        for _ in range(len(steps) + 2):  # keep releasing: every waiter gets its turn
            collect()
            if not holding and not tasks:
                break
            for n in list(holding):
                await s.release_handle(holding.pop(n))
                await settle()
            check()
        assert not tasks and not holding, "waiters left behind: the scheduler hung"
        assert all(r.holders == 0 for r in s.resources.values())

    asyncio.run(run())
