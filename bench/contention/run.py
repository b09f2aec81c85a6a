"""Contention benchmark: corral's Scheduler against asyncio.Semaphore and loco-agent 0.4.0.

    bash bench/contention/run.sh            # creates the bench-only venv once, then runs this

In one process and one run: N agents (one caller each, weights 1, 2, 3 by agent) loop
acquire -> one event-loop turn holding the slot -> release, against capacity 3 and 10, for
N = 8, 100, 1,000 and 10,000. For every system and cell: acquires per second, CPU per acquire
(time.process_time over the measured window / acquires) and grant latency (call to grant,
p50 and p99). Plus the uncontended acquire+release cost, and the cost of corral's choice
alone (WaitQueue) by number of waiting agents. loco runs under the same time bound as the
others: where it grants little in the window, its latency figures cover only the grants it
made (they are lower bounds). Prints a table; writes bench/results/contention.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))  # corral from the working tree

from corral.contention import Scheduler, SharedResource, WaitQueue  # noqa: E402

Factory = Callable[[int], Callable[[], AbstractAsyncContextManager[Any]]]


def weight_of(i: int) -> float:
    return float(1 + i % 3)


# -- the three systems: each gives, per agent index, a way to hold a slot ----------------------


def corral_system(n: int, capacity: int) -> Factory:
    sched = Scheduler(SharedResource("llm", capacity), alpha=0.25, max_waiters=n + 10)

    def per_agent(i: int) -> Callable[[], AbstractAsyncContextManager[Any]]:
        agent, weight = f"agent-{i}", weight_of(i)
        return lambda: sched.acquire(agent, weight)

    return per_agent


def semaphore_system(n: int, capacity: int) -> Factory:
    sem = asyncio.Semaphore(capacity)
    return lambda i: lambda: sem


def loco_system(n: int, capacity: int) -> Factory:
    from loco import Agent, AsyncLOCOScheduler, Task
    from loco import SharedResource as LocoResource

    agents = [Agent(agent_id=f"agent-{i}") for i in range(n)]
    sched = AsyncLOCOScheduler(
        agents, LocoResource("llm", capacity=capacity), alpha=0.25, max_waiters=n + 10
    )

    def per_agent(i: int) -> Callable[[], AbstractAsyncContextManager[Any]]:
        agent_id, weight = f"agent-{i}", weight_of(i)
        agent = sched.get_agent(agent_id)

        @asynccontextmanager
        async def hold() -> AsyncIterator[None]:
            # loco scores submitted tasks: its documented pattern submits one per call.
            await sched.submit_task(agent_id, Task(weight=weight))
            async with sched.acquire(agent_id):
                agent.serve_oldest_task()
                yield

        return hold

    return per_agent


SYSTEMS: dict[str, Callable[[int, int], Factory]] = {
    "corral": corral_system,
    "semaphore": semaphore_system,
    "loco": loco_system,
}


# -- measurement -------------------------------------------------------------------------------


async def contended(factory: Factory, n: int, warmup: float, window: float) -> dict[str, Any]:
    measuring = False
    running = True
    count = 0
    waits: list[float] = []

    async def worker(i: int) -> None:
        nonlocal count
        hold = factory(i)
        perf = time.perf_counter
        while running:
            t = perf()
            async with hold():
                if measuring:
                    waits.append(perf() - t)
                    count += 1
                await asyncio.sleep(0)

    gc.collect()
    tasks = [asyncio.create_task(worker(i)) for i in range(n)]
    await asyncio.sleep(warmup)
    measuring = True
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.sleep(window)
    t1, c1 = time.perf_counter(), time.process_time()
    measuring = False
    running = False
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    waits.sort()
    return {
        "acquires": count,
        "seconds": t1 - t0,
        "acquires_per_s": count / (t1 - t0),
        "cpu_us_per_acquire": (c1 - c0) / count * 1e6 if count else None,
        "wait_p50_ms": waits[len(waits) // 2] * 1e3 if waits else None,
        "wait_p99_ms": waits[int(len(waits) * 0.99)] * 1e3 if waits else None,
    }


async def uncontended(factory: Factory, iterations: int) -> dict[str, Any]:
    hold = factory(0)
    for _ in range(min(iterations, 1000)):
        async with hold():
            pass
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        async with hold():
            pass
    t1, c1 = time.perf_counter(), time.process_time()
    return {
        "iterations": iterations,
        "us_per_acquire_release": (t1 - t0) / iterations * 1e6,
        "cpu_us_per_acquire_release": (c1 - c0) / iterations * 1e6,
    }


def choice_cost(n: int, cycles: int) -> float:
    """µs per serve-one-and-requeue cycle of corral's WaitQueue with n waiting agents.

    Agents hold 1-3 requests of weight 1-3 each, so loads differ and the hull is not trivial.
    """
    rng = random.Random(n)
    q = WaitQueue(0.25)
    for i in range(n):
        for _ in range(rng.randint(1, 3)):
            q.push(f"agent-{i}", float(rng.randint(1, 3)))
        if i % 7 == 0:
            q.advance()
    t0 = time.perf_counter()
    for _ in range(cycles):
        best = q.best()
        assert best is not None
        q.remove(best)
        q.advance()
        q.push(best.agent_id, best.weight)
    return (time.perf_counter() - t0) / cycles * 1e6


# -- driver ------------------------------------------------------------------------------------


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[8, 100, 1000, 10000])
    ap.add_argument("--capacities", type=int, nargs="+", default=[3, 10])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "contention.json"))
    args = ap.parse_args()
    results = asyncio.run(measure(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    systems = [s for s in args.systems if s in SYSTEMS]
    versions: dict[str, str] = {"python": platform.python_version()}
    if "loco" in systems:
        try:
            import importlib.metadata as md

            versions["loco-agent"] = md.version("loco-agent")
        except Exception:  # loco not installed: run without it
            print("loco-agent is not installed here; use bench/contention/run.sh", file=sys.stderr)
            systems.remove("loco")

    results: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "processor": _cpu_model(),
            "versions": versions,
            "warmup_s": args.warmup,
            "window_s": args.window,
            "load_average_start": os.getloadavg()[0],
        },
        "uncontended": {},
        "contended": [],
        "choice_us": {},
    }
    for name in systems:
        iters = 20_000 if name == "loco" else 200_000
        u = await uncontended(SYSTEMS[name](1, 3), iters)
        results["uncontended"][name] = u
        print(f"uncontended  {name:10} {u['us_per_acquire_release']:7.2f} µs per acquire+release")
    print()
    head = f"{'agents':>7} {'cap':>4} {'system':10} {'acq/s':>11} {'CPU µs/acq':>11}"
    print(head + f" {'p50 wait ms':>12} {'p99 wait ms':>12}")
    for n in args.agents:
        for cap in args.capacities:
            for name in systems:
                r = await contended(SYSTEMS[name](n, cap), n, args.warmup, args.window)
                r.update(system=name, agents=n, capacity=cap, load_1m=os.getloadavg()[0])
                results["contended"].append(r)
                print(
                    f"{n:>7} {cap:>4} {name:10} {fmt(r['acquires_per_s'], 0):>11} "
                    f"{fmt(r['cpu_us_per_acquire']):>11} {fmt(r['wait_p50_ms'], 2):>12} "
                    f"{fmt(r['wait_p99_ms'], 2):>12}"
                )
    print()
    for n in args.agents:
        # best of three: the least disturbed by whatever else the machine is doing
        results["choice_us"][str(n)] = c = min(choice_cost(n, 20_000) for _ in range(3))
        print(f"corral choice alone, {n:>6} waiting agents: {c:6.2f} µs per serve+requeue")
    results["meta"]["load_average_end"] = os.getloadavg()[0]
    return results


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
