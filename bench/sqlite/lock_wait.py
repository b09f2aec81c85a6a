"""How long a submit waits for SQLite's write lock while other processes write without pause:
SQLite's own busy handler against corral's short sleeps between tries
(``StoreConfig.lock_poll``), alternating in one script.

Each round, for each setting and each load, on a fresh database file: ``--writers`` processes
submit batches of ``BATCH`` runs back to back (every process waits for the lock the same
way), and this process submits one run every 10 ms for ``--seconds``, timing each. Loads:
batches of 200 (each transaction holds the lock for some milliseconds, as a schedule herd's
batches or a burst of ``submit_many`` do) and single runs (short transactions).

    .venv/bin/python bench/sqlite/lock_wait.py [--rounds 2] [--writers 4] [--seconds 8]

Prints a table (all rounds' samples pooled per setting) and writes
bench/results/sqlite_lock_wait.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.stats import percentile  # noqa: E402

from corral.config import StoreConfig  # noqa: E402
from corral.models import RunSpec  # noqa: E402
from corral.store import create_store  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "sqlite_lock_wait.json"
WRITER = Path(__file__).with_name("lock_writer.py")
#: the settings compared: SQLite's busy handler (sleeps of up to 100 ms between tries) and
#: corral's tries after sleeps that double from 0.1 ms up to a cap (the default cap: 2 ms)
SETTINGS = {
    "sqlite busy handler": None,
    "sleeps up to 1 ms": 0.001,
    "sleeps up to 2 ms (default)": 0.002,
    "sleeps up to 10 ms": 0.01,
}
LOADS = {"batches of 200": 200, "single runs": 1}
PROBE_EVERY = 0.01


async def one_round(
    url: str, poll: float | None, batch: int, writers: int, seconds: float
) -> dict[str, Any]:
    config = StoreConfig(lock_poll=poll or 0)
    store = create_store(url, config)
    await store.open()
    arg = "none" if poll is None else str(poll)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(WRITER), url, str(batch), arg, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(writers)
    ]
    latencies: list[float] = []
    try:
        for proc in procs:
            assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"ready"
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            t = time.perf_counter()
            await store.submit([RunSpec("probe", tenant="probe")])
            latencies.append((time.perf_counter() - t) * 1000)
            await asyncio.sleep(max(PROBE_EVERY - (time.perf_counter() - t), 0.0))
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        submitted = 0
        for proc in procs:
            assert proc.stdout is not None
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            submitted += int(out.split()[-1])
        await store.close()
    return {"latencies_ms": latencies, "writer_runs_per_s": submitted / elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    pooled: dict[tuple[str, str], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        n = 0
        for _ in range(args.rounds):
            for load, batch in LOADS.items():
                for setting, poll in SETTINGS.items():
                    n += 1
                    url = f"sqlite:///{tmp}/lock-{n}.db"
                    r = await one_round(url, poll, batch, args.writers, args.seconds)
                    entry = pooled.setdefault((load, setting), {"ms": [], "rate": []})
                    entry["ms"].extend(r["latencies_ms"])
                    entry["rate"].append(r["writer_runs_per_s"])
                    print(
                        f"  {load}, {setting}: p99 {percentile(r['latencies_ms'], 99):.1f} ms, "
                        f"writers {r['writer_runs_per_s']:,.0f} runs/s",
                        flush=True,
                    )
    rows = []
    for (load, setting), entry in pooled.items():
        ms = entry["ms"]
        rows.append(
            {
                "load": load,
                "setting": setting,
                "submits": len(ms),
                "p50_ms": percentile(ms, 50),
                "p99_ms": percentile(ms, 99),
                "max_ms": max(ms),
                "over_50ms": sum(1 for v in ms if v > 50),
                "writer_runs_per_s": sum(entry["rate"]) / len(entry["rate"]),
            }
        )
    print(
        f"\n| {args.writers} writers | waiting for the lock | submits | p50 (ms) | p99 (ms) "
        "| max (ms) | over 50 ms | writers' runs/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['load']} | {r['setting']} | {r['submits']:,} | {r['p50_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['max_ms']:.0f} | {r['over_50ms']} "
            f"| {r['writer_runs_per_s']:,.0f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
