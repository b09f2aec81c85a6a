"""Stored-schedule benchmark: ``.venv/bin/python bench/schedules/run.py [--count 20000]``.

What a worker's schedule loop pays, every 5 s, to know which of the schedules tenants created
at run time are due (``worker/schedules.py``), with ``--count`` stored schedules spread over
the minutes of the hour, on SQLite and on PostgreSQL:

* ``due_schedules(until)``: what the loop reads (the store keeps each schedule's next tick,
  indexed), and the tick arithmetic the loop then does for those. ``until`` is just past the
  next minute boundary: the worst 5 s window, in which a sixtieth of the schedules is due;
* ``stored_schedules()``: every stored schedule, and the tick arithmetic for all of them: what
  a loop that read them all would pay (the baseline, in the same run);
* creating them, one ``create_schedule`` call each.

Prints a table and writes ``bench/results/schedules.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(REPO))

from bench.fairness.run import fresh_database  # noqa: E402

from corral import Corral, RunContext, StoreConfig  # noqa: E402
from corral.dispatch.schedule import Schedule  # noqa: E402

RESULTS = REPO / "bench" / "results" / "schedules.json"
PER_TENANT = 100  # the default limit
READS = 9


async def _median_ms(read: Callable[[], Awaitable[Sequence[Schedule]]]) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(READS):
        t = time.perf_counter()
        rows = len(await read())
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, rows


def _ticks_ms(schedules: Sequence[Schedule], now: float) -> float:
    t = time.perf_counter()
    for s in schedules:
        s.latest_tick(now)
        s.next_tick(now)
    return (time.perf_counter() - t) * 1000


async def measure(url: str, count: int) -> dict[str, Any]:
    app = Corral(url, config=StoreConfig(max_schedules_per_tenant=PER_TENANT))

    @app.agent("digest")
    async def digest(ctx: RunContext, input: Any) -> Any:
        return input

    async with app:
        t = time.perf_counter()
        for i in range(count):
            await app.create_schedule(
                f"s{i}", "digest", {"i": i}, cron=f"{i % 60} * * * *", tenant=f"t{i // PER_TENANT}"
            )
        created = count / (time.perf_counter() - t)
        store = app.store
        now = store.clock()
        until = (now // 60 + 1) * 60 + 1  # past the next minute's ticks
        due_ms, due_rows = await _median_ms(lambda: store.due_schedules(until))
        all_ms, all_rows = await _median_ms(store.stored_schedules)
        due = await store.due_schedules(until)
        every = await store.stored_schedules()
        return {
            "schedules": count,
            "creates_per_s": created,
            "due_read_ms": due_ms,
            "due_rows": due_rows,
            "due_ticks_ms": _ticks_ms(due, now),
            "all_read_ms": all_ms,
            "all_rows": all_rows,
            "all_ticks_ms": _ticks_ms(every, now),
        }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(
        "\n| backend | schedules | creates/s | due by the next minute: rows | read (ms) "
        "| ticks (ms) | all: read (ms) | ticks (ms) | all / due, read + ticks |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for backend, r in results.items():
        due = r["due_read_ms"] + r["due_ticks_ms"]
        every = r["all_read_ms"] + r["all_ticks_ms"]
        print(
            f"| {backend} | {r['schedules']:,} | {r['creates_per_s']:,.0f} | {r['due_rows']} "
            f"| {r['due_read_ms']:.1f} | {r['due_ticks_ms']:.1f} | {r['all_read_ms']:.0f} "
            f"| {r['all_ticks_ms']:.0f} | {every / due:.0f}x |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("sqlite", "postgres"):
            with fresh_database(backend, Path(tmp)) as url:
                results[backend] = await measure(url, args.count)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
