"""Durable-execution costs, on SQLite and PostgreSQL, in one process:

* a journaled no-op step versus a plain call (per step);
* replaying a run of 1,000 recorded steps (journal read + replay), as a redelivery does;
* the time from a child's completion to its waiting parent running again.

    .venv/bin/python bench/durable/run.py [--pg postgresql://...] [--steps 500] [--wakes 50]

Prints a table and writes bench/results/durable.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from corral import Corral, RunContext

RESULTS = Path(__file__).resolve().parents[1] / "results"


async def noop() -> None:
    return None


def build(url: str, marks: dict[str, Any]) -> Corral:
    app = Corral(url, lease_ttl=30)

    @app.agent("steps")
    async def steps(ctx: RunContext, n: int) -> None:
        t0 = time.perf_counter()
        for _ in range(n):
            await noop()
        t1 = time.perf_counter()
        for i in range(n):
            await ctx.step(f"s{i}", noop)
        t2 = time.perf_counter()
        marks["plain"] = (t1 - t0) / n
        marks["step"] = (t2 - t1) / n

    @app.agent("replayed")
    async def replayed(ctx: RunContext, n: int) -> None:
        t0 = time.perf_counter()
        for i in range(n):
            await ctx.step(f"s{i}", noop)
        if ctx.attempt == 1:
            raise RuntimeError("fail once, so the next delivery replays")
        marks["replay_only"] = time.perf_counter() - t0

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> float:
        return time.time()

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> None:
        (done_at,) = await ctx.wait(await ctx.spawn("child"))
        marks.setdefault("wakes", []).append(time.time() - done_at)

    return app


async def measure(url: str, steps: int, wakes: int) -> dict[str, Any]:
    marks: dict[str, Any] = {}
    app = build(url, marks)
    async with app:
        worker = app.worker(concurrency=4, poll_interval=1.0, retry_base=0.0)
        task = asyncio.create_task(worker.run())
        try:
            await app.wait(await app.submit("steps", steps), timeout=300)
            replay_id = await app.submit("replayed", 1000, max_attempts=2)
            await app.wait(replay_id, timeout=300)
            # what a redelivery does before the agent runs: read the whole journal
            t0 = time.perf_counter()
            entries = []
            while True:
                page = await app.store.journal(
                    replay_id, after=entries[-1].seq if entries else 0, limit=5000
                )
                entries.extend(page)
                if len(page) < 5000:
                    break
            read = time.perf_counter() - t0
            for _ in range(wakes):
                await app.wait(await app.submit("parent"), timeout=60)
        finally:
            worker.stop()
            await task
    wake = sorted(marks["wakes"])
    return {
        "plain_call_us": marks["plain"] * 1e6,
        "journaled_step_us": marks["step"] * 1e6,
        "step_overhead_us": (marks["step"] - marks["plain"]) * 1e6,
        "replay_1000_journal_read_ms": read * 1000,
        "replay_1000_steps_ms": marks["replay_only"] * 1000,
        "replay_1000_total_ms": (read + marks["replay_only"]) * 1000,
        "journal_entries": len(entries),
        "wake_p50_ms": statistics.median(wake) * 1000,
        "wake_p99_ms": wake[min(len(wake) - 1, int(len(wake) * 0.99))] * 1000,
        "wake_max_ms": wake[-1] * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--pg", default=os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--wakes", type=int, default=50)
    args = parser.parse_args()

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = await measure(f"sqlite:///{tmp}/bench.db", args.steps, args.wakes)
    schema = f"bench_durable_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in args.pg else "?"
        url = f"{args.pg}{sep}options=-csearch_path%3D{schema}"
        results["postgres"] = await measure(url, args.steps, args.wakes)
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    rows = [
        ("plain call (µs)", "plain_call_us"),
        ("journaled no-op step (µs)", "journaled_step_us"),
        ("step overhead (µs)", "step_overhead_us"),
        ("replay 1,000 steps: journal read (ms)", "replay_1000_journal_read_ms"),
        ("replay 1,000 steps: replay (ms)", "replay_1000_steps_ms"),
        ("replay 1,000 steps: total (ms)", "replay_1000_total_ms"),
        ("child done → parent running p50 (ms)", "wake_p50_ms"),
        ("child done → parent running p99 (ms)", "wake_p99_ms"),
    ]
    print(f"{'':42} {'SQLite':>10} {'PostgreSQL':>12}")
    for label, key in rows:
        print(f"{label:42} {results['sqlite'][key]:>10.2f} {results['postgres'][key]:>12.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "steps": args.steps,
        "results": results,
    }
    (RESULTS / "durable.json").write_text(json.dumps(out, indent=2))
    print(f"\nwrote {RESULTS / 'durable.json'}")


if __name__ == "__main__":
    asyncio.run(main())
