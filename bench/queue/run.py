"""The queue benchmark harness: ``python -m bench.queue.run`` (or ``bash bench/run_queue.sh``).

Scenarios, for every system (see README.md beside this file):

1. enqueue throughput, one job per call and in batches of 100 (the library's bulk call);
2. end-to-end throughput of N pre-filled no-op jobs drained by ONE separate worker process at
   concurrency 1 and at concurrency 32 (clock: from spawning the worker to the store saying
   all jobs are finished);
3. pickup latency with an idle worker: submit one job at a time with a random gap, the job
   writes ``time.time()`` at its start to a file, compared with the time taken just before the
   submit call; before the first pickup run, the same gaps before one round trip, one durable
   commit, and a commit followed by a commit on a connection its notification woke, with no
   queue at all (the floor of a durable pickup: accepting the run, then leasing it);
4. (corral only) submit latency while 100 runs are in flight and 1,000 are queued.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from bench.queue.common import base_dsn, latency_summary, read_stamps
from bench.queue.systems import REPO, CorralSystem, System, all_systems

RESULTS = REPO / "bench" / "results" / "queue.json"
POLL_S = 0.05


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------ workers


class Worker:
    """One worker process started by the harness; its output goes to a log file."""

    def __init__(
        self,
        system: System,
        concurrency: int,
        tag: str,
        logdir: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        argv, env = system.worker_argv(concurrency)
        env.update(extra_env or {})
        self.argv = argv
        self.logpath = logdir / f"{system.name}-{tag}.log"
        self._logf = self.logpath.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=REPO,
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"worker exited early with code {self.proc.returncode}: {' '.join(self.argv)}\n"
                f"--- tail of {self.logpath} ---\n{self.tail()}"
            )

    def tail(self, n: int = 30) -> str:
        self._logf.flush()
        try:
            return "\n".join(self.logpath.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (graceful drain), then SIGKILL to the worker's own process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._logf.close()


# ---------------------------------------------------------------------------------- scenarios


async def enqueue_single(system: System, n: int, cap_s: float) -> dict[str, Any]:
    async with system.fresh():
        for i in range(20):  # warm-up: connections, prepared statements
            await system.enqueue_one("noop", -1 - i)
        lat: list[float] = []
        t_start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            await system.enqueue_one("noop", i)
            lat.append(time.perf_counter() - t)
            if t - t_start > cap_s:
                break
        elapsed = time.perf_counter() - t_start
    return {
        "jobs": len(lat),
        "seconds": elapsed,
        "jobs_per_s": len(lat) / elapsed,
        "call_latency": latency_summary(lat),
    }


async def prefill(system: System, n: int, batch: int) -> dict[str, Any]:
    lat: list[float] = []
    t_start = time.perf_counter()
    for start in range(0, n, batch):
        ids = list(range(start, min(n, start + batch)))
        t = time.perf_counter()
        await system.enqueue_batch("noop", ids)
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t_start
    return {
        "jobs": n,
        "batch": batch,
        "seconds": elapsed,
        "jobs_per_s": n / elapsed,
        "call_latency": latency_summary(lat),
    }


def xacts(dbname: str | None) -> int | None:
    """Committed + rolled-back transactions PostgreSQL has counted for ``dbname``."""
    if dbname is None:
        return None
    with psycopg.connect(base_dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (dbname,),
        ).fetchone()
    return int(row[0]) if row else None


async def end_to_end(
    system: System, concurrency: int, n: int, cap_s: float, logdir: Path
) -> dict[str, Any]:
    async with system.fresh():
        fill = await prefill(system, n, 100)
        left = await system.remaining()
        if left != n:
            raise RuntimeError(f"{system.name}: prefilled {n} jobs but the store counts {left}")
        await asyncio.sleep(1.1)  # let backends flush their statistics
        x0 = xacts(system.pg_db)
        polls = 0
        w = Worker(system, concurrency, f"e2e-c{concurrency}", logdir)
        t0 = w.started
        t_first: float | None = None
        t_done: float | None = None
        try:
            while True:
                await asyncio.sleep(POLL_S)
                now = time.monotonic()
                left = await system.remaining()
                polls += 1
                if t_first is None and left < n:
                    t_first = now
                if left == 0:
                    t_done = now
                    break
                w.check()
                if now - t0 > cap_s:
                    break
        finally:
            w.stop()
        end = t_done if t_done is not None else now
        done = n - left
        elapsed = end - t0
        out: dict[str, Any] = {
            "concurrency": concurrency,
            "jobs": n,
            "completed": done,
            "all_done": t_done is not None,
            "seconds": elapsed,
            "jobs_per_s": done / elapsed if elapsed > 0 else 0.0,
            "settings": system.settings(concurrency),
            "prefill": fill,
        }
        if t_first is not None and end > t_first:
            # From the first poll that saw progress: excludes interpreter start and imports.
            out["seconds_from_first_pickup"] = end - t_first
            out["jobs_per_s_from_first_pickup"] = done / (end - t_first)
        if t_done is None:
            out["note"] = f"stopped at the {cap_s:.0f} s cap; rate = completed / elapsed"
        if x0 is not None and done:
            await asyncio.sleep(1.1)
            x1 = xacts(system.pg_db)
            if x1 is not None:
                # The harness's own polls are one transaction each; the rest is the worker's
                # (including its idle polls, heartbeats and start-up/shutdown work).
                out["worker_xacts"] = x1 - x0 - polls
                out["worker_xacts_per_job"] = (x1 - x0 - polls) / done
        return out


async def pickup(
    system: System, samples: int, concurrency: int, logdir: Path, gap: tuple[float, float]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="corral-bench-stamps-") as tmp:
        stamp_file = Path(tmp) / "stamps.tsv"
        async with system.fresh():
            w = Worker(
                system,
                concurrency,
                "pickup",
                logdir,
                extra_env={"BENCH_STAMP_FILE": str(stamp_file)},
            )
            try:
                # Warm-up: wait until the worker is up and has run a few jobs.
                for k in range(5):
                    key = 10_000_000 + k
                    await system.enqueue_one("stamp", key)
                    deadline = time.monotonic() + 60
                    while key not in read_stamps(stamp_file):
                        w.check()
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{system.name}: warm-up job never started")
                        await asyncio.sleep(0.02)
                await asyncio.sleep(0.5)
                submitted: dict[int, float] = {}
                for i in range(samples):
                    await asyncio.sleep(random.uniform(*gap))
                    submitted[i] = time.time()
                    await system.enqueue_one("stamp", i)
                deadline = time.monotonic() + 30
                stamps = read_stamps(stamp_file)
                while not all(i in stamps for i in submitted) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    stamps = read_stamps(stamp_file)
            finally:
                w.stop()
        lat = [stamps[i] - t for i, t in submitted.items() if i in stamps]
    out = latency_summary(lat)
    out.update(
        {
            "samples": samples,
            "started": len(lat),
            "worker_concurrency": concurrency,
            "gap_s": list(gap),
        }
    )
    return out


async def server_floor(samples: int, gap: tuple[float, float]) -> dict[str, Any]:
    """What this machine's PostgreSQL allows a pickup, without any queue: after the same idle
    gaps as the pickup runs, one round trip (``SELECT 1``), one durable commit (a one-row
    INSERT), and the least a durable pickup needs: a commit that notifies (accepting the run)
    and, woken by that notification, a second commit on another connection (leasing it), as a
    worker listens on one connection and leases on another. The listener lives in this
    process; a worker in another process only adds to it."""
    table = "corral_bench_floor"
    out: dict[str, Any] = {"samples": samples, "gap_s": list(gap)}
    dsn = base_dsn()
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as leaser,
    ):
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (x int)")
        await listener.execute("LISTEN corral_bench_floor")
        try:
            for name, statement in (
                ("round_trip", "SELECT 1"),
                ("commit", f"INSERT INTO {table} VALUES (1)"),
            ):
                lat: list[float] = []
                for _ in range(samples):
                    await asyncio.sleep(random.uniform(*gap))
                    t = time.perf_counter()
                    await conn.execute(statement)
                    lat.append(time.perf_counter() - t)
                out[name] = latency_summary(lat)
            woken: asyncio.Queue[float] = asyncio.Queue()

            async def lease_on_notify() -> None:
                async for _ in listener.notifies():
                    await leaser.execute(f"INSERT INTO {table} VALUES (2)")
                    woken.put_nowait(time.perf_counter())

            task = asyncio.create_task(lease_on_notify())
            lat = []
            for _ in range(samples):
                await asyncio.sleep(random.uniform(*gap))
                t = time.perf_counter()
                await conn.execute(
                    f"WITH i AS (INSERT INTO {table} VALUES (1)) "
                    "SELECT pg_notify('corral_bench_floor', '')"
                )
                lat.append(await asyncio.wait_for(woken.get(), 10) - t)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                await task
            out["notified_commit"] = latency_summary(lat)
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
    return out


async def submit_under_load(
    system: CorralSystem, samples: int, in_flight: int, queued: int, logdir: Path
) -> dict[str, Any]:
    async with system.fresh():
        w = Worker(system, in_flight, "submit-under-load", logdir)
        try:
            for start in range(0, in_flight, 100):
                await system.enqueue_batch("sleep", [600] * min(100, in_flight - start))
            deadline = time.monotonic() + 60
            while (f := await system.in_flight()) < in_flight:
                w.check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system.name}: only {f}/{in_flight} runs went in flight")
                await asyncio.sleep(0.1)
            for start in range(0, queued, 100):
                await system.enqueue_batch("sleep", [600] * min(100, queued - start))
            before = await system.app.stats()
            lat: list[float] = []
            for i in range(samples):
                t = time.perf_counter()
                await system.enqueue_one("noop", i)
                lat.append(time.perf_counter() - t)
            after = await system.app.stats()
        finally:
            w.stop(grace=3.0)
    out = latency_summary(lat)
    out.update(
        {
            "worker_concurrency": in_flight,
            "in_flight_before": int(before.in_flight),
            "queued_before": int(before.queued),
            "in_flight_after": int(after.in_flight),
            "queued_after": int(after.queued),
        }
    )
    return out


# ------------------------------------------------------------------------------------- report


def meta() -> dict[str, Any]:
    def ver(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    pg: dict[str, str] = {}
    with contextlib.suppress(Exception), psycopg.connect(base_dsn(), autocommit=True) as conn:
        for name in (
            "server_version",
            "max_connections",
            "shared_buffers",
            "synchronous_commit",
            "fsync",
        ):
            row = conn.execute(f"SHOW {name}").fetchone()
            pg[name] = row[0] if row else ""
    git: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        git["head"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True, text=True
        ).stdout
        git["src_dirty"] = bool(status.strip())
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "corral_git": git,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu,
            "mem_gib": mem_gib,
            "platform": platform.platform(),
        },
        "loadavg_before": os.getloadavg(),
        "python": platform.python_version(),
        "postgresql": pg,
        "versions": {
            p: ver(p)
            for p in ("corral", "pgqueuer", "procrastinate", "asyncpg", "psycopg", "psycopg-pool")
        },
    }


def fmt_rate(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    if "error" in r:
        return "error"
    s = f"{r['jobs_per_s']:,.0f}"
    if r.get("all_done") is False:
        s += f" ({r['completed']:,}/{r['jobs']:,}, capped)"
    return s


def fmt_lat(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    if "error" in r:
        return "error"
    return f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}"


COLUMNS = [
    ("system", None),
    ("enqueue 1/call (jobs/s)", lambda r: fmt_rate(r.get("enqueue_single"))),
    ("enqueue batch 100 (jobs/s)", lambda r: fmt_rate(r.get("enqueue_batch"))),
    ("e2e c=1 (jobs/s)", lambda r: fmt_rate(r.get("e2e_c1"))),
    ("e2e c=32 (jobs/s)", lambda r: fmt_rate(r.get("e2e_c32"))),
    ("pickup p50 / p99 (ms)", lambda r: fmt_lat(r.get("pickup"))),
    (
        "submit idle p50 / p99 (ms)",
        lambda r: fmt_lat((r.get("enqueue_single") or {}).get("call_latency")),
    ),
    ("submit under load p50 / p99 (ms)", lambda r: fmt_lat(r.get("submit_under_load"))),
]


def table_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for name, r in results.items():
        rows.append([r.get("label", name)] + [f(r) for _, f in COLUMNS[1:]])  # type: ignore[misc]
    return rows


def print_table(results: dict[str, dict[str, Any]]) -> None:
    headers = [h for h, _ in COLUMNS]
    rows = table_rows(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        print("-+-".join("-" * w for w in widths))
        for r in rows:
            print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        return
    t = Table(title="corral queue benchmark")
    for i, h in enumerate(headers):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    Console(width=200).print(t)


def floor_line(floor: dict[str, Any]) -> str:
    parts = [
        f"{label} {fmt_lat(floor.get(key))} ms"
        for key, label in (
            ("round_trip", "one round trip"),
            ("commit", "one durable commit"),
            ("notified_commit", "a commit, then a commit on a notified connection"),
        )
    ]
    return "PostgreSQL floor after the pickup's idle gaps (p50 / p99): " + "; ".join(parts)


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    headers = [h for h, _ in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in table_rows(results):
        lines.append("| " + " | ".join(r) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- main


async def step(system: System, out: dict[str, Any], key: str, coro: Any) -> None:
    load0 = os.getloadavg()[0]
    log(f"{system.name}: {key} ... (load average {load0:.2f})")
    t = time.monotonic()
    try:
        out[key] = await coro
        r = out[key]
        # Other work on this machine skews every figure: keep the 1-minute load average.
        r["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        summary = (
            f"{r['jobs_per_s']:,.0f} jobs/s"
            if "jobs_per_s" in r
            else f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
        )
        log(f"{system.name}: {key} -> {summary} ({time.monotonic() - t:.1f} s)")
    except Exception as e:  # report and carry on with the other scenarios
        out[key] = {"error": f"{type(e).__name__}: {e}"}
        log(f"{system.name}: {key} FAILED: {type(e).__name__}: {e}")


async def run_all(
    systems: list[System], args: argparse.Namespace, logdir: Path, results: dict[str, Any]
) -> None:
    """Scenario by scenario, every system in turn: the systems compared in one scenario run
    minutes apart, so a change in the machine's other load hits them more evenly. The long
    concurrency-1 runs go last."""
    gap = (args.gap_min, args.gap_max)
    plan: list[tuple[str, str, Any]] = []
    for sc in ("enqueue", "e2e32", "pickup", "load", "e2e1"):
        if sc == "e2e32" and "e2e" in args.scenarios and 32 in args.concurrency:
            # rounds interleave the systems: round 1 runs each once, then round 2, ...
            for r in range(args.rounds):
                for s in systems:
                    plan.append(
                        (
                            s.name,
                            f"e2e_c32_round{r + 1}",
                            lambda s=s: end_to_end(s, 32, args.jobs, args.cap, logdir),
                        )
                    )
            continue
        for s in systems:
            if sc == "enqueue" and "enqueue" in args.scenarios:
                plan.append(
                    (s.name, "enqueue_single", lambda s=s: enqueue_single(s, args.single, args.cap))
                )
            elif sc == "pickup" and "pickup" in args.scenarios and s.has_pickup:
                plan.append(
                    (s.name, "pickup", lambda s=s: pickup(s, args.pickup_samples, 32, logdir, gap))
                )
            elif sc == "load" and "load" in args.scenarios and isinstance(s, CorralSystem):
                plan.append(
                    (
                        s.name,
                        "submit_under_load",
                        lambda s=s: submit_under_load(s, args.load_samples, 100, 1000, logdir),
                    )
                )
            elif sc == "e2e1" and "e2e" in args.scenarios and 1 in args.concurrency and s.has_c1:
                plan.append(
                    (s.name, "e2e_c1", lambda s=s: end_to_end(s, 1, args.jobs, args.cap, logdir))
                )
    by_name = {s.name: s for s in systems}
    floor_done = "pickup" not in args.scenarios
    for name, key, make in plan:
        if key == "pickup" and not floor_done:
            floor_done = True
            log("server floor: round trip and durable commits after idle gaps ...")
            results["_floor"] = await server_floor(args.pickup_samples, gap)
        await step(by_name[name], results[name], key, make())
    for s in systems:
        out = results[s.name]
        rounds = [out.pop(k) for k in sorted(out) if k.startswith("e2e_c32_round")]
        done = [r for r in rounds if "jobs_per_s" in r]
        if done:
            # the median round stands for the system; every round's rate stays in the JSON
            rates = [r["jobs_per_s"] for r in done]
            done.sort(key=lambda r: r["jobs_per_s"])
            out["e2e_c32"] = dict(done[(len(done) - 1) // 2], rounds_jobs_per_s=rates)
        elif rounds:
            out["e2e_c32"] = rounds[0]
        # The pre-fill of each end-to-end run is the batched-enqueue measurement.
        fills = [
            out[k]["prefill"] for k in ("e2e_c1", "e2e_c32") if k in out and "prefill" in out[k]
        ]
        if fills:
            batch = dict(fills[0])
            batch["runs_jobs_per_s"] = [f["jobs_per_s"] for f in fills]
            batch["jobs_per_s"] = sum(batch["runs_jobs_per_s"]) / len(fills)
            out["enqueue_batch"] = batch


async def wait_quiet(max_wait: float, threshold: float) -> None:
    """Wait (at most ``max_wait`` s) until the 1-minute load average is below ``threshold``."""
    deadline = time.monotonic() + max_wait
    while (load := os.getloadavg()[0]) >= threshold and time.monotonic() < deadline:
        log(f"load average {load:.2f} >= {threshold}: waiting for a quieter machine")
        await asyncio.sleep(15)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    if args.wait_quiet > 0:
        await wait_quiet(args.wait_quiet, args.quiet_load)
    systems = [s for s in all_systems() if s.name in args.systems]
    logdir = Path(tempfile.mkdtemp(prefix="corral-bench-logs-"))
    log(f"worker logs in {logdir}")
    report: dict[str, Any] = {
        "meta": meta(),
        "parameters": {
            "jobs": args.jobs,
            "cap_s": args.cap,
            "single": args.single,
            "pickup_samples": args.pickup_samples,
            "gap_s": [args.gap_min, args.gap_max],
            "load_samples": args.load_samples,
            "poll_s": POLL_S,
        },
        "results": {},
    }
    t_all = time.monotonic()
    for system in systems:
        report["results"][system.name] = {"label": system.label}
    await run_all(systems, args, logdir, report["results"])
    floor = report["results"].pop("_floor", None)
    if floor is not None:
        report["server_floor"] = floor
    for system in systems:
        out = report["results"][system.name]
        out["settings"] = {"c1": system.settings(1), "c32": system.settings(32)}
    report["meta"]["total_seconds"] = round(time.monotonic() - t_all, 1)
    report["meta"]["loadavg_after"] = os.getloadavg()
    report["meta"]["worker_logs"] = str(logdir)
    return report


def main(argv: list[str] | None = None) -> int:
    names = [s.name for s in all_systems()]
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--systems", nargs="+", default=names, choices=names)
    ap.add_argument(
        "--scenarios",
        nargs="+",
        default=["enqueue", "e2e", "pickup", "load"],
        choices=["enqueue", "e2e", "pickup", "load"],
    )
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 32], choices=[1, 32])
    ap.add_argument("--jobs", type=int, default=20_000, help="pre-filled jobs per e2e run")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="end-to-end runs at concurrency 32 per system (interleaved); the median counts",
    )
    ap.add_argument(
        "--cap",
        type=float,
        default=float(os.environ.get("BENCH_CAP_S", 45)),
        help="time cap (s) of one e2e or enqueue run; a capped run reports completed/elapsed",
    )
    ap.add_argument("--single", type=int, default=2_000, help="jobs in the 1-per-call run")
    ap.add_argument("--pickup-samples", type=int, default=300)
    ap.add_argument("--gap-min", type=float, default=0.01)
    ap.add_argument("--gap-max", type=float, default=0.05)
    ap.add_argument("--load-samples", type=int, default=500)
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before starting, wait up to this many seconds for the load average to drop",
    )
    ap.add_argument("--quiet-load", type=float, default=1.0)
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args(argv)
    report = asyncio.run(amain(args))
    print_table(report["results"])
    report["markdown_table"] = markdown_table(report["results"])
    if "server_floor" in report:
        report["floor_line"] = floor_line(report["server_floor"])
        print(report["floor_line"])
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"wrote {out_path} (total {report['meta']['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
