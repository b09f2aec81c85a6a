"""Schedule herd benchmark: ``.venv/bin/python bench/schedules/herd.py [--schedules 5000]``.

A thousand tenants' "every day at 7": ``--schedules`` stored schedules, all due at the same
moment, offered by ``--workers`` worker processes' schedule loops at once (every worker offers
every due tick; the store lets one have each). Measured, on SQLite and on PostgreSQL:

* the herd: from the tick until the last of its runs is inserted (the runs' ``created_at``);
* a client's submit latency meanwhile (one ``submit`` every 10 ms from just before the tick
  until the herd is in): what every other tenant feels. A short herd has few submits, whose
  p99 is nearly their maximum; the count of those over 50 ms compares the harm done.

Each corral source tree runs in turns, on one database, at successive ticks: the working
tree, and ``--baseline`` (a git ref, by default the commit before ticks were offered in
batches, whose loop offered each tick in a transaction of its own). ``--baseline ''``
measures the working tree alone. Prints a table and writes ``bench/results/herd.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(REPO))

from bench.fairness.run import fresh_database  # noqa: E402
from bench.stats import percentile  # noqa: E402

from corral import Corral, RunContext, StoreConfig  # noqa: E402

RESULTS = REPO / "bench" / "results" / "herd.json"
WORKER = Path(__file__).with_name("herd_worker.py")
#: the worker processes start this long before the tick (imports, open, and a first read of
#: the schedules due in the next 5 s)
LEAD = 4.0
PER_TENANT = 100
PROBE_EVERY = 0.01


@dataclass
class Tree:
    label: str
    src: Path
    args: tuple[str, ...] = ()


def baseline_tree(ref: str, workdir: Path) -> Tree:
    """The corral package as of git ``ref``, unpacked beside the working tree."""
    target = workdir / "baseline"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "src/corral"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return Tree(f"before ({ref})", target / "src")


def herd_runs(url: str, since: float) -> tuple[int, float]:
    """How many of the schedules' runs exist for the tick at ``since``, and the last one's
    creation time."""
    query = (
        "SELECT COUNT(*), MAX(created_at) FROM corral_runs "
        "WHERE agent = 'digest' AND created_at >= %s"
    )
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            row = conn.execute(query.replace("%s", "?"), (since,)).fetchone()
    else:
        with psycopg.connect(url) as conn:
            row = conn.execute(query, (since,)).fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or math.nan)


async def one_herd(
    app: Corral, url: str, tree: Tree, workers: int, count: int, tick: float, period: float
) -> dict[str, Any]:
    if time.time() > tick - LEAD:
        # the loops would make up for the tick missed, unmeasured, as the herd comes
        raise SystemExit(f"the last herd took too long for a period of {period:.0f} s")
    await asyncio.sleep(tick - LEAD - time.time())
    env = dict(os.environ, PYTHONPATH=str(tree.src))
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), url, *tree.args, env=env, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"ready"
        await asyncio.sleep(max(tick - 0.5 - time.time(), 0.0))
        latencies: list[float] = []
        deadline = tick + period - LEAD - 1
        next_check = tick
        while time.time() < deadline:
            t = time.perf_counter()
            await app.submit("probe", None, tenant="probe")
            latencies.append((time.perf_counter() - t) * 1000)
            if time.time() >= next_check:
                if herd_runs(url, tick)[0] >= count:
                    break
                next_check = time.time() + 0.1
            await asyncio.sleep(max(PROBE_EVERY - (time.perf_counter() - t), 0.0))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)
    runs, last = herd_runs(url, tick)
    return {
        "tree": tree.label,
        "runs": runs,
        "herd_s": last - tick,
        "submit_p50_ms": percentile(latencies, 50),
        "submit_p99_ms": percentile(latencies, 99),
        "submit_max_ms": max(latencies),
        "submits_over_50ms": sum(1 for ms in latencies if ms > 50),
        "submits": len(latencies),
    }


async def measure(
    url: str, trees: list[Tree], count: int, workers: int, rounds: int, period: float
) -> list[dict[str, Any]]:
    app = Corral(url, config=StoreConfig(max_schedules_per_tenant=PER_TENANT))

    @app.agent("digest")
    async def digest(ctx: RunContext, input: Any) -> Any:
        return input

    @app.agent("probe")
    async def probe(ctx: RunContext, input: Any) -> Any:
        return input

    results = []
    async with app:
        await app.set_tenant("probe", max_queued=1_000_000)
        # created just after a tick, so that all of them start at it; each round then takes
        # the next tick, with no tick between two rounds for the loops to make up for
        start = math.ceil(time.time() / period) * period
        await asyncio.sleep(start + 0.2 - time.time())
        for i in range(count):
            tenant = f"t{i // PER_TENANT}"
            await app.create_schedule(f"s{i}", "digest", {"i": i}, every=period, tenant=tenant)
        tick = start
        for _ in range(rounds):
            for tree in trees:
                tick += period
                result = await one_herd(app, url, tree, workers, count, tick, period)
                print(
                    f"  {tree.label}: {result['runs']} runs in {result['herd_s']:.2f} s, "
                    f"submit p99 {result['submit_p99_ms']:.1f} ms",
                    flush=True,
                )
                results.append(result)
    return results


def print_table(results: dict[str, list[dict[str, Any]]], workers: int) -> None:
    print(
        f"\n| backend | corral | runs | herd in (s), {workers} workers | submit p50 (ms) "
        "| p99 (ms) | max (ms) | submits | over 50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, rows in results.items():
        for r in rows:
            print(
                f"| {backend} | {r['tree']} | {r['runs']:,} | {r['herd_s']:.2f} "
                f"| {r['submit_p50_ms']:.1f} | {r['submit_p99_ms']:.1f} "
                f"| {r['submit_max_ms']:.0f} | {r['submits']:,} | {r['submits_over_50ms']} |"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--period", type=float, default=30.0, help="seconds between the schedules' ticks"
    )
    parser.add_argument("--baseline", default="397abd4")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--tick-batches",
        type=int,
        nargs="*",
        default=[],
        help="also the working tree with these numbers of ticks per transaction",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = [Tree("working tree", REPO / "src")]
        for size in args.tick_batches:
            trees.append(Tree(f"working tree, {size} ticks a batch", REPO / "src", (str(size),)))
        if args.baseline:
            trees.insert(0, baseline_tree(args.baseline, Path(tmp)))
        for backend in args.backends.split(","):
            print(f"{backend}: {args.schedules:,} schedules, {args.workers} workers", flush=True)
            with fresh_database(backend, Path(tmp)) as url:
                results[backend] = await measure(
                    url, trees, args.schedules, args.workers, args.rounds, args.period
                )
    print_table(results, args.workers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
