"""A simulated LLM provider shared by 4 worker processes: per-process limits versus corral's
shared scheduler.

The provider (``corral.demo.provider``) admits ``C`` calls at once and ``R`` per minute and
answers 429 above either. Four processes each run ``AGENTS`` agents that call it in a loop for
``--duration`` seconds:

* ``semaphore``: each process guards its calls with ``asyncio.Semaphore(C)`` — the usual
  set-up, where every process believes it owns the whole limit;
* ``shared``: every call goes through one ``SharedScheduler(capacity=C, rpm=R)`` in the store,
  shared by the four processes; a 429, should one come, is reported so everyone backs off.

A 429 is retried after its Retry-After. Reported per mode: the provider's 429 count, goodput
(successful calls per second) against the provider's limit (``C / mean latency``, or ``R/60``
if lower), and the p95 latency per agent from wanting a call to getting its answer.

    .venv/bin/python bench/contention/provider_scenario.py [--duration 30] [--pg DSN]

Writes bench/results/contention_provider.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PROCESSES = 4
AGENTS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def client(
    mode: str, url: str, db: str, concurrency: int, rpm: int, duration: float, index: int
) -> dict[str, Any]:
    """One worker process: AGENTS agents calling the provider until the deadline."""
    from corral.contention.shared import SharedScheduler
    from corral.store import create_store

    store = create_store(db) if mode == "shared" else None
    shared: SharedScheduler | None = None
    if store is not None:
        await store.open()
        shared = SharedScheduler(
            store,
            "provider",
            capacity=concurrency,
            rpm=rpm,
            max_waiters=1000,
            lease_ttl=10.0,
            poll_interval=0.1,
        )
        await shared.open()
    local = asyncio.Semaphore(concurrency)
    latencies: dict[str, list[float]] = {}
    ok = throttled = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration

        async def call(agent: str) -> None:
            nonlocal ok, throttled
            while True:
                if shared is not None:
                    async with shared.acquire(agent):
                        response = await http.post("/v1/complete", json={"agent": agent})
                else:
                    async with local:
                        response = await http.post("/v1/complete", json={"agent": agent})
                if response.status_code == 200:
                    ok += 1
                    return
                throttled += 1
                retry = float(response.headers.get("Retry-After", "0.05"))
                if shared is not None:
                    await shared.report_throttled(retry)
                await asyncio.sleep(retry)

        async def agent_loop(agent: str) -> None:
            while loop.time() < deadline:
                started = time.monotonic()
                await call(agent)
                latencies.setdefault(agent, []).append(time.monotonic() - started)

        await asyncio.gather(*(agent_loop(f"p{index}-a{i}") for i in range(AGENTS)))
    if shared is not None and store is not None:
        await shared.close()
        await store.close()
    return {"ok": ok, "throttled_seen": throttled, "latencies": latencies}


def run_mode(mode: str, url: str, db: str, args: argparse.Namespace) -> dict[str, Any]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client",
                mode,
                "--url",
                url,
                "--db",
                db,
                "--index",
                str(i),
                "--duration",
                str(args.duration),
                "--concurrency",
                str(args.concurrency),
                "--rpm",
                str(args.rpm),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    outputs = [json.loads(p.communicate(timeout=args.duration + 120)[0]) for p in procs]
    stats = httpx.get(f"{url}/stats").json()
    latencies = {a: v for o in outputs for a, v in o["latencies"].items()}
    p95 = {a: sorted(v)[int(0.95 * (len(v) - 1))] for a, v in latencies.items() if v}
    return {
        "provider_429s": stats["throttled"],
        "successful_calls": sum(o["ok"] for o in outputs),
        "goodput_per_s": sum(o["ok"] for o in outputs) / args.duration,
        "peak_in_flight": stats["peak_in_flight"],
        "p95_latency_s_median_agent": statistics.median(p95.values()),
        "p95_latency_s_worst_agent": max(p95.values()),
        "per_agent_p95_s": p95,
    }


def start_provider(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral.demo.provider",
            "--port",
            str(port),
            "--concurrency",
            str(args.concurrency),
            "--rpm",
            str(args.rpm),
            "--latency",
            str(args.latency),
            "--seed",
            "7",
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/stats")
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the provider did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rpm", type=int, default=6000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument(
        "--pg", default=os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--client", default=None)
    parser.add_argument("--url", default=None)
    parser.add_argument("--db", default=None)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args()
    if args.client:
        result = asyncio.run(
            client(
                args.client,
                args.url,
                args.db,
                args.concurrency,
                args.rpm,
                args.duration,
                args.index,
            )
        )
        print(json.dumps(result))
        return

    schema = f"bench_provider_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in args.pg else "?"
    db = f"{args.pg}{sep}options=-csearch_path%3D{schema}"
    results: dict[str, Any] = {}
    try:
        for mode in ("semaphore", "shared"):
            provider, url = start_provider(args)  # a fresh provider per mode
            try:
                results[mode] = run_mode(mode, url, db, args)
            finally:
                provider.terminate()
                provider.wait()
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    mean_latency = args.latency * 2.718281828 ** (0.5**2 / 2)  # log-normal mean, sigma 0.5
    limit = min(args.concurrency / mean_latency, args.rpm / 60)
    print(
        f"provider: C={args.concurrency}, R={args.rpm}/min, median latency "
        f"{args.latency * 1000:.0f} ms -> limit ≈ {limit:.1f} calls/s; "
        f"{PROCESSES} processes x {AGENTS} agents, {args.duration:.0f} s per mode\n"
    )
    print(
        f"{'mode':<12}{'429s':>8}{'goodput/s':>11}{'of limit':>10}{'peak C':>8}"
        f"{'p95 median agent':>18}{'p95 worst agent':>17}"
    )
    for mode, r in results.items():
        print(
            f"{mode:<12}{r['provider_429s']:>8}{r['goodput_per_s']:>11.1f}"
            f"{r['goodput_per_s'] / limit:>10.0%}{r['peak_in_flight']:>8}"
            f"{r['p95_latency_s_median_agent'] * 1000:>15.0f} ms"
            f"{r['p95_latency_s_worst_agent'] * 1000:>14.0f} ms"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "provider": {
            "concurrency": args.concurrency,
            "rpm": args.rpm,
            "median_latency_s": args.latency,
            "limit_per_s": limit,
        },
        "duration_s": args.duration,
        "processes": PROCESSES,
        "agents_per_process": AGENTS,
        "results": results,
    }
    (RESULTS / "contention_provider.json").write_text(json.dumps(out, indent=2))
    print(f"\nwrote {RESULTS / 'contention_provider.json'}")


if __name__ == "__main__":
    main()
