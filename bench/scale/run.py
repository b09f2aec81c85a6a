"""Scale limits of one PostgreSQL, as DESIGN.md asks them written down ("Where this goes past
one machine"): what corral's workers get out of one server as worker processes are added,
what LISTEN/NOTIFY costs as idle workers are added, and how much disk a run and its journal
take, with retention keeping that bounded.

    .venv/bin/python bench/scale/run.py [--quick] [--output results/scale.json]

* ``workers``: 20,000 no-op runs, pre-filled, of one tenant and then of 100; 1, 2 and 4
  worker processes of concurrency 32 drain them. Throughput is the runs over the span from
  the first lease to the last ack (the runs' own timestamps: no process start-up in it). CPU:
  the server's processes and the workers', read from /proc (the server's only when it runs
  on this machine).
* ``fanout``: 1, 8 and 32 idle worker processes (concurrency 4): first what they cost doing
  nothing for 5 s, then while runs are submitted one at a time at 100/s (CPU per run net of
  the idle cost). Pickup is from the submit call to the agent's start. With handoffs (the
  default) a run submitted to a waiting worker goes to one worker's own channel; without
  (``--no-handoffs``), every submit notifies the work channel that every worker listens to.
* ``journal``: runs of an agent with 5 steps (each result ~100 bytes of JSON), on PostgreSQL
  and SQLite: bytes per run and per journal entry, the time retention takes to delete them
  (``purge_finished``), and the size after a second batch of runs reuses the space.

Prints tables (markdown) and writes JSON. Needs PostgreSQL (``BENCH_PG_DSN``, default the local
server); the databases it makes are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from bench.queue.common import drop_database, read_stamps, recreate_database  # noqa: E402
from bench.stats import percentile  # noqa: E402

from corral import Corral, RunContext  # noqa: E402

DB = "bench_scale"
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    runs: int = 20_000
    tenant_counts: tuple[int, ...] = (1, 100)
    processes: tuple[int, ...] = (1, 2, 4)
    idle_workers: tuple[int, ...] = (1, 8, 32)
    fanout_runs: int = 600
    fanout_rate: float = 100.0
    idle_seconds: float = 5.0
    journal_runs: int = 2_000


QUICK = Sizes(
    runs=4_000,
    processes=(1, 2),
    idle_workers=(1, 8),
    fanout_runs=200,
    idle_seconds=2.0,
    journal_runs=300,
)

# ----------------------------------------------------------------------------- processes


def _cpu_of(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (None: it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def _server_cpu() -> dict[int, float]:
    """CPU so far of each of the PostgreSQL server's processes, when the server runs on this
    machine (else none)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        cpu = _cpu_of(int(entry.name))
        if cpu is not None:
            found[int(entry.name)] = cpu
    return found


class CpuMeter:
    """CPU seconds spent by the server and by ``workers`` between start() and stop(). Server
    processes started meanwhile (new connections' backends) count from zero; those that ended
    meanwhile are missed (the workers' connections stay open throughout)."""

    def __init__(self, workers: list[subprocess.Popen[bytes]]) -> None:
        self._workers = [p.pid for p in workers]

    def _workers_cpu(self) -> float:
        return sum(cpu for pid in self._workers if (cpu := _cpu_of(pid)) is not None)

    def start(self) -> None:
        self._server = _server_cpu()
        self._workers_at = self._workers_cpu()

    def stop(self) -> dict[str, float | None]:
        now = _server_cpu()
        server = sum(cpu - self._server.get(pid, 0.0) for pid, cpu in now.items())
        return {
            "server_cpu_s": server if now else None,
            "workers_cpu_s": self._workers_cpu() - self._workers_at,
        }


@contextlib.contextmanager
def workers(
    dsn: str, n: int, concurrency: int, *extra: str, stamps: Path | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` ``corral worker`` processes on ``dsn``, stopped (SIGTERM) on the way out."""
    env = {**os.environ, "BENCH_CORRAL_DSN": dsn, "PYTHONPATH": str(ROOT)}
    if stamps is not None:
        env["BENCH_STAMP_FILE"] = str(stamps)
    argv = [str(BIN / "corral"), "worker", "bench.queue.corral_app:app"]
    argv += ["--concurrency", str(concurrency), "--lease-ttl", "30", *extra]
    with tempfile.TemporaryFile() as log:
        procs = [
            subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
            for _ in range(n)
        ]
        try:
            yield procs
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            if any(p.returncode not in (0, -signal.SIGKILL) for p in procs):
                log.seek(0)
                sys.stderr.write(log.read().decode(errors="replace"))
                raise RuntimeError("a worker process failed (its log is above)")


@contextlib.asynccontextmanager
async def fresh_app(tenants: int) -> AsyncIterator[tuple[str, Corral]]:
    dsn = recreate_database(DB)
    app = Corral(dsn, lease_ttl=30.0)
    try:
        async with app:
            for i in range(tenants):
                await app.set_tenant(f"t{i:03d}")
            yield dsn, app
    finally:
        drop_database(DB)


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _scalar(dsn: str, query: str) -> Any:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query)
        row = await cur.fetchone() if cur.description else None
        return row[0] if row else None


# ----------------------------------------------------------------------- workers sharing


async def workers_sharing(sizes: Sizes, n: int, tenants: int) -> dict[str, Any]:
    async with fresh_app(tenants) as (dsn, app):
        batch = 1000
        for start in range(0, sizes.runs, batch):
            await app.submit_many(
                [
                    {"agent": "noop", "input": {"i": i}, "tenant": f"t{i % tenants:03d}"}
                    for i in range(start, min(start + batch, sizes.runs))
                ]
            )
        await _scalar(dsn, "CHECKPOINT")  # the fill's dirty pages are not the drain's cost
        with workers(dsn, n, 32) as procs:
            meter = CpuMeter(procs)
            meter.start()

            async def drained() -> bool:
                left = await _scalar(
                    dsn, "SELECT count(*) FROM corral_runs WHERE status <> 'succeeded'"
                )
                return int(left) == 0

            await _until(drained, 600, "the drain")
            cpu = meter.stop()
        first, last = await _fetch_span(dsn)
    span = last - first
    return {
        "processes": n,
        "tenants": tenants,
        "concurrency": 32,
        "runs": sizes.runs,
        "span_s": span,
        "runs_per_s": sizes.runs / span,
        **cpu,
        "server_cpu_us_per_run": _per_run(cpu["server_cpu_s"], sizes.runs),
        "workers_cpu_us_per_run": _per_run(cpu["workers_cpu_s"], sizes.runs),
    }


async def _fetch_span(dsn: str) -> tuple[float, float]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT min(started_at), max(finished_at) FROM corral_runs")
        row = await cur.fetchone()
        assert row is not None
        return float(row[0]), float(row[1])


def _per_run(seconds: float | None, runs: int) -> float | None:
    return None if seconds is None else seconds / runs * 1e6


# ---------------------------------------------------------------------- notify fan-out


class PacedSubmits:
    """What waiting workers cost: first for ``sizes.idle_seconds`` with nothing to do (polls,
    offer renewals), then while ``submit(i)`` runs ``sizes.fanout_runs`` times at
    ``sizes.fanout_rate`` per second (CPU net of the idle cost over the same time)."""

    def __init__(self, sizes: Sizes, procs: list[subprocess.Popen[bytes]]) -> None:
        self.sizes = sizes
        self.meter = CpuMeter(procs)
        self.submit_s: list[float] = []
        #: when (epoch seconds) each submit call began
        self.submitted: dict[int, float] = {}

    async def run(self, submit: Callable[[int], Awaitable[object]]) -> None:
        await asyncio.sleep(0.5)
        self.meter.start()
        await asyncio.sleep(self.sizes.idle_seconds)
        self.idle = self.meter.stop()
        self.meter.start()
        self._began = time.perf_counter()
        for i in range(self.sizes.fanout_runs):
            due = self._began + i / self.sizes.fanout_rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            self.submitted[i] = time.time()
            began = time.perf_counter()
            await submit(i)
            self.submit_s.append(time.perf_counter() - began)

    def stop(self) -> None:
        """The end of the busy time (after what the submits caused has happened)."""
        self.cpu = self.meter.stop()
        self.busy = time.perf_counter() - self._began

    def report(self) -> dict[str, Any]:
        sizes, cpu, idle = self.sizes, self.cpu, self.idle
        ms = [s * 1000 for s in self.submit_s]
        return {
            "runs": sizes.fanout_runs,
            "rate_per_s": sizes.fanout_rate,
            "submit_p50_ms": percentile(ms, 50),
            "submit_p99_ms": percentile(ms, 99),
            "idle_s": sizes.idle_seconds,
            "idle_server_cpu_s": idle["server_cpu_s"],
            "idle_workers_cpu_s": idle["workers_cpu_s"],
            "busy_s": self.busy,
            **cpu,
            "server_cpu_us_per_run": self._net_per_run("server"),
            "workers_cpu_us_per_run": self._net_per_run("workers"),
        }

    def _net_per_run(self, who: str) -> float | None:
        spent, idle_spent = self.cpu[f"{who}_cpu_s"], self.idle[f"{who}_cpu_s"]
        if spent is None or idle_spent is None:
            return None
        idle_rate = idle_spent / self.sizes.idle_seconds
        return (spent - idle_rate * self.busy) / self.sizes.fanout_runs * 1e6


async def notify_fanout(sizes: Sizes, k: int, handoffs: bool, workdir: Path) -> dict[str, Any]:
    stamps = workdir / f"stamps-{k}-{handoffs}.txt"  # workdir is new for each benchmark run
    extra = () if handoffs else ("--no-handoffs",)
    async with fresh_app(50) as (dsn, app):
        with workers(dsn, k, 4, *extra, stamps=stamps) as procs:
            await _until(lambda: _all_waiting(dsn, k, handoffs), 120, f"{k} waiting workers")
            paced = PacedSubmits(sizes, procs)
            await paced.run(lambda i: app.submit("stamp", {"i": i}, tenant=f"t{i % 50:03d}"))

            async def all_started() -> bool:
                return len(read_stamps(stamps)) >= sizes.fanout_runs

            await _until(all_started, 60, "every run to start")
            paced.stop()
            handed = (await app.store.delivery_counters()).handoffs
    started = read_stamps(stamps)
    pickup = [(started[i] - t) * 1000 for i, t in paced.submitted.items()]
    return {
        "idle_workers": k,
        "handoffs": handoffs,
        "handed": handed,
        "pickup_p50_ms": percentile(pickup, 50),
        "pickup_p99_ms": percentile(pickup, 99),
        **paced.report(),
    }


async def capped_submits(sizes: Sizes, k: int) -> dict[str, Any]:
    """Runs submitted one at a time, at the same rate, for a tenant at its cap (cap 1, its one
    run in flight): none of them can start, so a notification of one wakes workers for
    nothing."""
    async with fresh_app(1) as (dsn, app):
        await app.set_tenant("capped", cap=1)
        with workers(dsn, k, 4, "--drain-timeout", "0.1") as procs:
            await _until(lambda: _all_waiting(dsn, k, True), 120, f"{k} waiting workers")
            holder = await app.submit("sleep", {"s": 600.0}, tenant="capped")

            async def holding() -> bool:
                return (await app.get(holder)).status.value == "running"

            await _until(holding, 30, "the capped tenant's run to start")
            await _until(lambda: _all_waiting(dsn, k, True), 30, f"{k} waiting workers")
            paced = PacedSubmits(sizes, procs)
            await paced.run(lambda i: app.submit("noop", {"i": i}, tenant="capped"))
            await asyncio.sleep(0.5)  # the wake-ups the last submits caused
            paced.stop()
            stats = (await app.stats()).tenant("capped")
            assert stats is not None and stats.in_flight == 1, stats
            assert stats.queued == sizes.fanout_runs, stats
            await app.cancel(holder)
    return {"idle_workers": k, **paced.report()}


async def _all_waiting(dsn: str, k: int, handoffs: bool) -> bool:
    """Every worker waits for work: with handoffs, each has its offer standing; without,
    each has its listening session up (its last statement a LISTEN)."""
    if handoffs:
        query = "SELECT count(*) FROM corral_idle_workers WHERE slots > 0"
    else:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN%'"
        )
    return int(await _scalar(dsn, query)) >= k


# ---------------------------------------------------------------------- journal growth

STEP_RESULT = {"text": "x" * 80, "n": 1}
STEPS = 5


def _journal_app(dsn: str) -> Corral:
    app = Corral(dsn, lease_ttl=30.0)

    @app.agent("steps")
    async def steps(ctx: RunContext, input: Any) -> Any:
        for s in range(STEPS):
            await ctx.step(f"s{s}", lambda: STEP_RESULT)
        return {"done": input}

    return app


async def journal_growth(sizes: Sizes, backend: str, workdir: Path) -> dict[str, Any]:
    if backend == "postgres":
        dsn = recreate_database(DB)
    else:
        dsn = f"sqlite:///{tempfile.mkdtemp(dir=workdir)}/journal.db"
    app = _journal_app(dsn)
    try:
        async with app:
            await app.set_tenant("acme")
            first = await _run_batch(app, sizes.journal_runs)
            size_one = await _sizes(dsn, backend)
            entries = int(await _count(dsn, backend, "SELECT count(*) FROM corral_journal"))
            began = time.perf_counter()
            purged = 0
            while True:
                n = await app.purge_finished(0, limit=1000)
                if n == 0:
                    break
                purged += n
            purge_s = time.perf_counter() - began
            await _vacuum(dsn, backend)
            after_purge = await _sizes(dsn, backend)
            await _run_batch(app, sizes.journal_runs)
            size_two = await _sizes(dsn, backend)
    finally:
        if backend == "postgres":
            drop_database(DB)
    runs = sizes.journal_runs
    return {
        "backend": backend,
        "runs": runs,
        "steps_per_run": STEPS,
        "journal_entries": entries,
        "run_s": first,
        "bytes": size_one,
        "runs_bytes_per_run": size_one["runs"] / runs,
        "journal_bytes_per_entry": size_one["journal"] / entries,
        "total_bytes_per_run": size_one["total"] / runs,
        "purged": purged,
        "purge_s": purge_s,
        "purged_per_s": purged / purge_s if purge_s else None,
        "bytes_after_purge": after_purge,
        "bytes_after_second_batch": size_two,
        "growth_second_batch": size_two["total"] / size_one["total"],
    }


async def _run_batch(app: Corral, n: int) -> float:
    specs = [{"agent": "steps", "input": i, "tenant": "acme"} for i in range(n)]
    ids = await app.submit_many(specs)
    began = time.perf_counter()
    worker = app.worker(concurrency=32, poll_interval=0.05)
    await worker.run(until_idle=True)
    for run_id in ids[:: max(1, n // 20)]:
        run = await app.get(run_id)
        assert run.status.value == "succeeded", run
    return time.perf_counter() - began


async def _count(dsn: str, backend: str, query: str) -> Any:
    if backend == "postgres":
        return await _scalar(dsn, query)
    with contextlib.closing(sqlite3.connect(dsn.removeprefix("sqlite:///"))) as conn:
        return conn.execute(query).fetchone()[0]


async def _vacuum(dsn: str, backend: str) -> None:
    """What routine maintenance does after a purge: PostgreSQL's (auto)vacuum makes the dead
    rows' space reusable (the files keep their size); SQLite keeps freed pages in the file
    for reuse (no VACUUM, which rewrites the whole file)."""
    if backend == "postgres":
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("VACUUM corral_runs, corral_journal")


async def _sizes(dsn: str, backend: str) -> dict[str, int]:
    """Bytes on disk of the runs table and the journal, each with its indexes (and TOAST)."""
    if backend == "postgres":
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("CHECKPOINT")
            cur = await conn.execute(
                "SELECT pg_total_relation_size('corral_runs'), "
                "pg_total_relation_size('corral_journal')"
            )
            row = await cur.fetchone()
            assert row is not None
            runs, journal = int(row[0]), int(row[1])
    else:
        path = dsn.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            runs = _sqlite_bytes(conn, "corral_runs")
            journal = _sqlite_bytes(conn, "corral_journal")
    return {"runs": runs, "journal": journal, "total": runs + journal}


def _sqlite_bytes(conn: sqlite3.Connection, table: str) -> int:
    """Pages in use by ``table`` and its indexes (the dbstat table), in bytes."""
    row = conn.execute(
        "SELECT sum(pgsize) FROM dbstat WHERE name = ? OR name IN "
        "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?)",
        (table, table),
    ).fetchone()
    return int(row[0] or 0)


# ------------------------------------------------------------------------------ report


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def cpu_cell(us: float | None) -> str:
    """CPU per run net of the idle cost: that subtraction's noise (CPU is counted in 10 ms
    ticks) can take a figure near zero below it, which is shown as 0."""
    return fmt(None if us is None else max(0.0, us), 0)


def print_tables(results: dict[str, Any]) -> None:
    print("\n### Worker processes sharing one PostgreSQL (no-op runs, concurrency 32 each)\n")
    print("| tenants | processes | runs/s | server CPU µs/run | workers' CPU µs/run |")
    print("|---|---|---|---|---|")
    for r in results["workers"]:
        print(
            f"| {r['tenants']} | {r['processes']} | {fmt(r['runs_per_s'], 0)} | "
            f"{fmt(r['server_cpu_us_per_run'], 0)} | {fmt(r['workers_cpu_us_per_run'], 0)} |"
        )
    print(
        f"\n### Idle workers listening: runs submitted one at a time at "
        f"{results['sizes']['fanout_rate']:.0f}/s\n"
    )
    print(
        "| idle workers | handoffs | idle CPU, % of a core: server / workers | handed | "
        "submit p50 / p99 ms | pickup p50 / p99 ms | server CPU µs/run | workers' CPU µs/run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results["fanout"]:
        idle_server = r["idle_server_cpu_s"]
        idle_share = "–" if idle_server is None else f"{idle_server / r['idle_s'] * 100:.1f}"
        print(
            f"| {r['idle_workers']} | {'on' if r['handoffs'] else 'off'} | "
            f"{idle_share} / {r['idle_workers_cpu_s'] / r['idle_s'] * 100:.1f} | "
            f"{r['handed']} of {r['runs']} | "
            f"{fmt(r['submit_p50_ms'], 2)} / {fmt(r['submit_p99_ms'], 2)} | "
            f"{fmt(r['pickup_p50_ms'], 2)} / {fmt(r['pickup_p99_ms'], 2)} | "
            f"{cpu_cell(r['server_cpu_us_per_run'])} | {cpu_cell(r['workers_cpu_us_per_run'])} |"
        )
    print(
        f"\n### Idle workers while a tenant at its cap submits one run at a time at "
        f"{results['sizes']['fanout_rate']:.0f}/s (none can start)\n"
    )
    print("| idle workers | submit p50 / p99 ms | server CPU µs/run | workers' CPU µs/run |")
    print("|---|---|---|---|")
    for r in results["capped"]:
        print(
            f"| {r['idle_workers']} | {fmt(r['submit_p50_ms'], 2)} / {fmt(r['submit_p99_ms'], 2)} "
            f"| {cpu_cell(r['server_cpu_us_per_run'])} | {cpu_cell(r['workers_cpu_us_per_run'])} |"
        )
    print(f"\n### Disk per run ({STEPS} journaled steps of ~100 bytes each, and a result)\n")
    print(
        "| backend | runs table B/run | journal B/entry | total B/run | purge runs/s | "
        "total after purge | after a second batch |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results["journal"]:
        print(
            f"| {r['backend']} | {fmt(r['runs_bytes_per_run'], 0)} | "
            f"{fmt(r['journal_bytes_per_entry'], 0)} | {fmt(r['total_bytes_per_run'], 0)} | "
            f"{fmt(r['purged_per_s'], 0)} | {fmt(r['bytes_after_purge']['total'] / 1e6, 2)} MB "
            f"(of {fmt(r['bytes']['total'] / 1e6, 2)}) | "
            f"{fmt(r['bytes_after_second_batch']['total'] / 1e6, 2)} MB "
            f"({r['growth_second_batch']:.2f}x the first) |"
        )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = ap.parse_args()
    sizes = QUICK if args.quick else Sizes()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sizes": sizes.__dict__ | {},
    }
    with tempfile.TemporaryDirectory(prefix="corral-scale-") as tmp:
        workdir = Path(tmp)
        results["workers"] = [
            await workers_sharing(sizes, n, tenants)
            for tenants in sizes.tenant_counts
            for n in sizes.processes
        ]
        results["fanout"] = [
            await notify_fanout(sizes, k, handoffs, workdir)
            for k in sizes.idle_workers
            for handoffs in (True, False)
        ]
        results["capped"] = [await capped_submits(sizes, k) for k in sizes.idle_workers]
        results["journal"] = [
            await journal_growth(sizes, backend, workdir) for backend in ("postgres", "sqlite")
        ]
    print_tables(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
