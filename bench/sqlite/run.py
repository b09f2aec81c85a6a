"""Where SQLite's WAL checkpoints run: inside commits (SQLite's auto-checkpoint) or on the
store's own thread (``StoreConfig.checkpoint_interval``), alternating in one script.

Each round, for each setting, on a fresh database file:

* submit latency with 100 runs in flight (a worker process holding them) and 1,000 queued,
  ``--samples`` single submits one after another (the queue benchmark's "submit under load",
  with more samples so that p99 is not three outliers);
* end-to-end throughput: ``--jobs`` pre-filled no-op runs drained by one worker process at
  concurrency 32, timed from the worker's start to the last run's end.

    .venv/bin/python bench/sqlite/run.py [--rounds 4] [--samples 2000] [--jobs 10000]

Prints a table (medians over rounds) and writes bench/results/sqlite_checkpoints.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.stats import percentile  # noqa: E402

from corral import Corral  # noqa: E402
from corral.config import StoreConfig  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CORRAL = Path(sys.executable).with_name("corral")
#: the settings compared: SQLite's own checkpoints, and the store's thread at its default
SETTINGS = {"in commits (0)": 0.0, "own thread (0.05 s)": 0.05}


def _worker(dsn: str, interval: float, concurrency: int) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        BENCH_SQLITE_DSN=dsn,
        BENCH_SQLITE_CHECKPOINT=str(interval),
        PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    )
    argv = [str(CORRAL), "worker", "bench.sqlite.app:app", "--concurrency", str(concurrency)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


async def _until(check: Any, worker: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while not await check():
        if worker.poll() is not None:
            err = worker.stderr.read().decode() if worker.stderr else ""
            raise RuntimeError(f"the worker exited ({worker.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def submit_under_load(interval: float, samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="corral-bench-sqlite-") as tmp:
        dsn = f"sqlite:///{tmp}/bench.db"
        async with Corral(dsn, config=StoreConfig(checkpoint_interval=interval)) as app:
            worker = _worker(dsn, interval, 100)
            try:
                sleepers = [{"agent": "sleep", "input": {"s": 600}} for _ in range(100)]
                await app.submit_many(sleepers)

                async def all_in_flight() -> bool:
                    return (await app.stats()).in_flight >= 100

                await _until(all_in_flight, worker, "100 runs went in flight")
                for _ in range(10):
                    await app.submit_many(sleepers)
                lat = []
                for i in range(samples):
                    t = time.perf_counter()
                    await app.submit("noop", {"i": i})
                    lat.append(time.perf_counter() - t)
            finally:
                _stop(worker)
    return {
        "submit_p50_ms": percentile(lat, 50) * 1e3,
        "submit_p99_ms": percentile(lat, 99) * 1e3,
        "submit_max_ms": max(lat) * 1e3,
    }


async def end_to_end(interval: float, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="corral-bench-sqlite-") as tmp:
        dsn = f"sqlite:///{tmp}/bench.db"
        async with Corral(dsn, config=StoreConfig(checkpoint_interval=interval)) as app:
            for start in range(0, jobs, 500):
                batch = min(500, jobs - start)
                await app.submit_many([{"agent": "noop", "input": {"i": i}} for i in range(batch)])
            t = time.perf_counter()
            worker = _worker(dsn, interval, 32)
            try:

                async def drained() -> bool:
                    stats = await app.stats()
                    return stats.queued == 0 and stats.in_flight == 0

                await _until(drained, worker, "the runs were drained")
                elapsed = time.perf_counter() - t
            finally:
                _stop(worker)
    return {"e2e_c32_runs_per_s": jobs / elapsed}


ROWS = [
    ("submit under load p50 (ms)", "submit_p50_ms"),
    ("submit under load p99 (ms)", "submit_p99_ms"),
    ("submit under load max (ms)", "submit_max_ms"),
    ("e2e c=32 (runs/s, incl. worker start)", "e2e_c32_runs_per_s"),
]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        # alternate which setting goes first: the machine's drift hits both alike
        order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
        for name in order:
            interval = SETTINGS[name]
            result = await submit_under_load(interval, args.samples)
            result.update(await end_to_end(interval, args.jobs))
            rounds[name].append(result)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in result.items())
            print(f"round {r + 1} {name}: {shown}", flush=True)
    medians = {
        name: {key: statistics.median(res[key] for res in rs) for _, key in ROWS}
        for name, rs in rounds.items()
    }
    names = list(SETTINGS)
    heading = f"median of {args.rounds} rounds"
    print(f"\n{heading:40}" + "".join(f"{n:>22}" for n in names))
    for label, key in ROWS:
        print(f"{label:40}" + "".join(f"{medians[n][key]:>22.2f}" for n in names))
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": vars(args),
        "rounds": rounds,
        "medians": medians,
    }
    path = RESULTS / "sqlite_checkpoints.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
