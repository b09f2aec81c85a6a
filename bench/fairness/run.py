"""The fairness benchmark: ``.venv/bin/python bench/fairness/run.py [--quick]``.

Scenarios, on SQLite and on PostgreSQL, 4 worker processes x 8 slots, runs of 50-500 ms
(``asyncio.sleep``), every tenant on the default plan (no cap: fair choice alone, not caps,
must protect the quiet tenants):

* ``noisy``: tenant A submits 5,000 runs at once; tenants B-E each submit 50 runs at random
  moments over the next 20 s. Once with tenant fairness, once with ``fairness="fifo"`` (the
  workers' app is built with that config), and each again with A's runs spread over 100
  agents and priorities from -1e6 to 1e6 (``spread``).
* ``solo``: B-E alone (A absent), same arrival times: the wait with nobody to protect them.
* ``weighted``: three backlogged tenants of weights 1, 2 and 3 (3,000 runs each), fair and
  fifo: Jain's index over weight-normalised throughput and in-flight time.
* ``lease cost``: time per ``store.lease(limit=8)`` with 1,000 tenants of which 200 are
  backlogged, against a single backlogged tenant (in process, no workers).

Queue wait is measured from the client's clock just before the submit call to the agent's
first instruction (both wall-clock on this machine). Results: a table on stdout and
``bench/results/fairness.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make ``bench.fairness`` importable
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from bench.stats import percentile  # noqa: E402

from corral import Corral  # noqa: E402
from corral.config import StoreConfig  # noqa: E402
from corral.models import Ack, RunSpec  # noqa: E402
from corral.store import Store, create_store  # noqa: E402

RESULTS = REPO / "bench" / "results" / "fairness.json"
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
WORKERS = 4
SLOTS = 8
#: the express variants: extra slots per worker that only tenants with fewer than
#: EXPRESS_BELOW runs in flight may take (``corral worker --express-slots/--express-below``)
EXPRESS_SLOTS = 2
EXPRESS_BELOW = 3
QUIET = ("B", "C", "D", "E")
WEIGHTED = {"N1": 1.0, "N2": 2.0, "N3": 3.0}


@dataclass(frozen=True)
class Sizes:
    noisy_runs: int = 5000
    quiet_runs: int = 50
    window: float = 20.0  # quiet arrivals are spread over [0.5, window] s after A's submit
    fifo_deadline: float = 60.0  # after the window, longest wait for quiet runs to start
    weighted_runs: int = 3000
    weighted_window: float = 20.0
    weighted_warmup: float = 3.0
    tenants: int = 1000
    backlogged: int = 200
    cost_runs: int = 10_000
    cost_calls: int = 300
    cost_rounds: int = 3

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            noisy_runs=1500,
            quiet_runs=15,
            window=6.0,
            fifo_deadline=20.0,
            weighted_runs=1000,
            weighted_window=8.0,
            weighted_warmup=2.0,
            tenants=1000,
            backlogged=200,
            cost_runs=4000,
            cost_calls=100,
            cost_rounds=1,
        )


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ databases


@contextlib.contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, or a new PostgreSQL schema reached through
    ``options=-csearch_path=...`` (dropped afterwards)."""
    if backend == "sqlite":
        path = workdir / f"fair-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    schema = f"bench_fair_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# -------------------------------------------------------------------------------- workers


class WorkerPool:
    """``WORKERS`` ``corral worker bench.fairness.app:app`` processes."""

    def __init__(self, dsn: str, mode: str, stamps: Path, express: bool = False) -> None:
        env = dict(
            os.environ,
            BENCH_FAIRNESS_DSN=dsn,
            BENCH_FAIRNESS_MODE=mode,
            BENCH_FAIRNESS_STAMPS=str(stamps),
            CORRAL_DATABASE_URL=dsn,
            PYTHONPATH=str(REPO),
        )
        self.logs = [stamps / f"worker-{i}.err" for i in range(WORKERS)]
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "corral.cli.main",
                    "worker",
                    "bench.fairness.app:app",
                    "--concurrency",
                    str(SLOTS),
                    "--lease-ttl",
                    "30",
                    "--drain-timeout",
                    "0",
                    *(
                        [
                            "--express-slots",
                            str(EXPRESS_SLOTS),
                            "--express-below",
                            str(EXPRESS_BELOW),
                        ]
                        if express
                        else []
                    ),
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log_file.open("w"),
                start_new_session=True,
            )
            for log_file in self.logs
        ]

    async def ready(self, timeout: float = 60.0) -> None:
        """Until every worker has opened the store and printed its banner."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if all("corral worker" in p.read_text() for p in self.logs):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("workers did not start:\n" + self.tails())

    def check(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited with {proc.returncode}:\n{self.tails()}")

    def tails(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in self.logs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@dataclass
class Stamps:
    """What the agents recorded: first start (with the client's submit time) and end of
    every run, by run id."""

    tenant: dict[str, str] = field(default_factory=dict)
    submitted: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> Stamps:
        s = cls()
        for path in directory.glob("stamps-*.log"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 6 and parts[0] == "S":
                    _, run_id, tenant, submitted, started, _attempt = parts
                    s.tenant[run_id] = tenant
                    s.submitted[run_id] = float(submitted)
                    s.started[run_id] = min(float(started), s.started.get(run_id, math.inf))
                elif len(parts) == 4 and parts[0] == "E":
                    s.ended[parts[1]] = max(float(parts[3]), s.ended.get(parts[1], 0.0))
        return s


# ---------------------------------------------------------------------------- statistics


def summary_ms(values: Sequence[float], censored: int = 0) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "censored": censored,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "max_ms": max(ms) if ms else math.nan,
    }


def jain(values: Sequence[float]) -> float:
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else math.nan


def quiet_schedule(sizes: Sizes, seed: int) -> list[tuple[float, str, float]]:
    """(offset after A's submit, tenant, duration) of every quiet run, the same in every
    scenario of a run of the benchmark."""
    rng = random.Random(seed)
    return sorted(
        (rng.uniform(0.5, sizes.window), tenant, rng.uniform(0.05, 0.5))
        for tenant in QUIET
        for _ in range(sizes.quiet_runs)
    )


def slot_floor(stamps: Stamps, submitted: float) -> float:
    """The least possible wait of a run submitted at ``submitted``: zero if a slot was free
    then, else the time until the first run anywhere ended (runs are not preempted)."""
    busy = sum(
        1
        for r, start in stamps.started.items()
        if start <= submitted < stamps.ended.get(r, math.inf)
    )
    if busy < WORKERS * SLOTS:
        return 0.0
    later = [e for e in stamps.ended.values() if e > submitted]
    return min(later) - submitted if later else math.inf


# ------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Submitted:
    run_id: str
    tenant: str
    at: float  # the client's clock just before the submit call (also in the run's input)
    visible: float  # the client's clock when the submit call returned (the run committed)


async def submit_quiet(
    client: Corral, schedule: list[tuple[float, str, float]], t0: float
) -> list[Submitted]:
    out: list[Submitted] = []
    for offset, tenant, duration in schedule:
        delay = t0 + offset - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        at = time.time()
        run_id = await client.submit("nap0", {"t": at, "s": duration}, tenant=tenant)
        out.append(Submitted(run_id, tenant, at, time.time()))
    return out


async def wait_started(
    stamps_dir: Path, ids: Sequence[str], deadline: float, pool: WorkerPool
) -> None:
    wanted = set(ids)
    while time.time() < deadline:
        pool.check()
        if wanted <= set(Stamps.read(stamps_dir).started):
            return
        await asyncio.sleep(0.25)


@contextlib.asynccontextmanager
async def running(
    backend: str, mode: str, workdir: Path, express: bool = False
) -> AsyncIterator[tuple[Corral, Path, WorkerPool]]:
    stamps = Path(tempfile.mkdtemp(prefix="stamps-", dir=workdir))
    with fresh_database(backend, workdir) as dsn:
        client = Corral(dsn, config=StoreConfig(fairness=mode))  # type: ignore[arg-type]
        await client.open()  # migrates before the workers race to
        pool = WorkerPool(dsn, mode, stamps, express)
        try:
            await pool.ready()
            yield client, stamps, pool
        finally:
            pool.stop()
            await client.close()


def first_chance(leases_began: Sequence[float], q: Submitted, own: float | None) -> float:
    """From ``q``'s submit to the first lease call, of any worker, that began after the
    submit had returned (the first lease sure to see the run), or to the run's own lease
    (``own``) if that came sooner: a run handed over in its submit (PostgreSQL, an idle
    worker), or leased by a worker woken before the submit call had returned.
    ``leases_began``: every run's first lease time (``started_at`` in the store), sorted."""
    i = bisect.bisect_left(leases_began, q.visible)
    after = leases_began[i] if i < len(leases_began) else math.inf
    return min(after, math.inf if own is None else own) - q.at


def quiet_report(
    stamps: Stamps,
    quiet: Sequence[Submitted],
    leased_at: dict[str, float],
    deadline: float,
    leases_began: Sequence[float],
) -> dict[str, Any]:
    """Per quiet tenant: the wait, split at the lease (``started_at`` in the store, the
    leasing worker's clock), the least wait possible without preemption (slot floor), what
    the dispatch added to it, and the first chance a lease had to take the run. A run that
    had not started by ``deadline`` counts with the wait it had then (a lower bound), and the
    tenant's figures are marked censored."""
    by_tenant: dict[str, dict[str, Any]] = {}
    for tenant in QUIET:
        mine = [q for q in quiet if q.tenant == tenant]
        ran = [q for q in mine if q.run_id in stamps.started]
        waits = [stamps.started[q.run_id] - q.at for q in ran]
        leased = [leased_at[q.run_id] - q.at for q in ran if q.run_id in leased_at]
        lag = [stamps.started[q.run_id] - leased_at[q.run_id] for q in ran if q.run_id in leased_at]
        floors = [slot_floor(stamps, q.at) for q in ran]
        lower_bounds = [deadline - q.at for q in mine if q.run_id not in stamps.started]
        by_tenant[tenant] = {
            "wait": summary_ms(waits + lower_bounds, censored=len(lower_bounds)),
            "until_leased": summary_ms(leased),
            "lease_to_agent_start": summary_ms(lag),
            "slot_floor": summary_ms(floors),
            "dispatch_overhead": summary_ms([w - f for w, f in zip(waits, floors, strict=True)]),
            "first_chance": summary_ms(
                [first_chance(leases_began, q, leased_at.get(q.run_id)) for q in ran]
            ),
        }
    return by_tenant


async def noisy(
    backend: str,
    mode: str,
    spread: bool,
    sizes: Sizes,
    workdir: Path,
    schedule: list[tuple[float, str, float]],
    *,
    with_noisy: bool = True,
    express: bool = False,
) -> dict[str, Any]:
    rng = random.Random(7)
    async with running(backend, mode, workdir, express) as (client, stamps_dir, pool):
        if with_noisy:
            at = time.time()
            await client.submit_many(
                [
                    {
                        "agent": f"nap{i % 100}" if spread else "nap0",
                        "tenant": "A",
                        "priority": rng.randint(-1_000_000, 1_000_000) if spread else 0,
                        "input": {"t": at, "s": rng.uniform(0.05, 0.5)},
                    }
                    for i in range(sizes.noisy_runs)
                ]
            )
        t0 = time.time()
        quiet = await submit_quiet(client, schedule, t0)
        window_end = time.time()
        deadline = window_end + sizes.fifo_deadline
        await wait_started(stamps_dir, [q.run_id for q in quiet], deadline, pool)
        deadline = min(deadline, time.time())
        stats = await client.stats()
        lease_times = await first_lease_times(client)
    leased_at = {q.run_id: lease_times[q.run_id] for q in quiet if q.run_id in lease_times}
    stamps = Stamps.read(stamps_dir)
    shutil.rmtree(stamps_dir, ignore_errors=True)
    a = stats.tenant("A")
    return {
        "backend": backend,
        "mode": mode,
        "spread": spread,
        "with_noisy": with_noisy,
        "window_s": window_end - t0,
        "noisy_started_in_window": sum(
            1
            for r, st in stamps.started.items()
            if stamps.tenant[r] == "A" and t0 <= st <= window_end
        ),
        "noisy_queued_at_end": a.queued if a else 0,
        "quiet": quiet_report(stamps, quiet, leased_at, deadline, sorted(lease_times.values())),
    }


async def first_lease_times(client: Corral) -> dict[str, float]:
    """Every leased run's first lease time (``started_at``: the leasing worker's clock when
    its lease call began), by run id."""
    began: dict[str, float] = {}
    async for page in client.iter_runs():
        began.update((r.id, r.started_at) for r in page if r.started_at is not None)
    return began


async def weighted(backend: str, mode: str, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Three always-backlogged tenants of weights 1, 2, 3, submitted in interleaved rounds
    (so that FIFO, which orders by submit time, alternates between them)."""
    rng = random.Random(3)
    async with running(backend, mode, workdir) as (client, stamps_dir, pool):
        for tenant, weight in WEIGHTED.items():
            await client.set_tenant(tenant, weight=weight)
        rounds = 20
        per_round = sizes.weighted_runs // rounds
        submitted: Counter[str] = Counter()
        for k in range(rounds):
            for tenant in list(WEIGHTED)[k % 3 :] + list(WEIGHTED)[: k % 3]:
                await client.submit_many(
                    [
                        {
                            "agent": "nap0",
                            "tenant": tenant,
                            "input": {"t": time.time(), "s": rng.uniform(0.05, 0.5)},
                        }
                        for _ in range(per_round)
                    ]
                )
                submitted[tenant] += per_round
        t0 = time.time()
        await asyncio.sleep(sizes.weighted_window)
        t1 = time.time()
        pool.check()
        stats = await client.stats()
    stamps = Stamps.read(stamps_dir)
    shutil.rmtree(stamps_dir, ignore_errors=True)
    w0 = t0 + sizes.weighted_warmup
    started: Counter[str] = Counter()
    busy: defaultdict[str, float] = defaultdict(float)
    for run_id, start in stamps.started.items():
        tenant = stamps.tenant[run_id]
        end = stamps.ended.get(run_id, math.inf)
        if w0 <= start < t1:
            started[tenant] += 1
        busy[tenant] += max(0.0, min(end, t1) - max(start, w0))
    span = t1 - w0
    backlogged = [t for t in WEIGHTED if (ts := stats.tenant(t)) is not None and ts.queued > 0]
    per_weight = [started[t] / span / WEIGHTED[t] for t in backlogged]
    in_flight = {t: busy[t] / span for t in WEIGHTED}
    total_w = sum(WEIGHTED.values())
    return {
        "backend": backend,
        "mode": mode,
        "window_s": span,
        "backlogged_at_end": backlogged,
        "throughput_per_s": {t: started[t] / span for t in WEIGHTED},
        "mean_in_flight": in_flight,
        "fair_in_flight": {t: WORKERS * SLOTS * w / total_w for t, w in WEIGHTED.items()},
        "jain_throughput_per_weight": jain(per_weight) if len(backlogged) > 1 else math.nan,
        "jain_in_flight_per_weight": jain([in_flight[t] / WEIGHTED[t] for t in backlogged])
        if len(backlogged) > 1
        else math.nan,
    }


#: the layouts of the lease-cost probe: one backlogged tenant; 200 backlogged tenants whose
#: backlogs arrived one tenant after the other (each tenant's runs side by side in the table
#: and the FIFO index, the worst case for the pages a fair lease touches); the same 200 with
#: their arrivals interleaved in time
COST_CASES = ("one_tenant", "many_tenants", "many_interleaved")


async def lease_cost(backend: str, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Median time of ``store.lease(limit=8)`` (each lease acked, untimed, before the next)
    with 1,000 tenants of which 200 are backlogged, and with one backlogged tenant. The
    layouts alternate over ``sizes.cost_rounds`` rounds, each on a fresh database, so drift
    in the machine's speed falls on all of them alike; a ratio is of the median rounds."""
    out: dict[str, Any] = {"backend": backend, "limit": SLOTS, "rounds": sizes.cost_rounds}
    times: dict[str, list[float]] = {case: [] for case in COST_CASES}
    rounds: dict[str, list[float]] = {case: [] for case in COST_CASES}
    for _ in range(sizes.cost_rounds):
        for case in COST_CASES:
            got = await _lease_cost_round(backend, sizes, workdir, case)
            times[case] += got
            rounds[case].append(percentile(got, 50) * 1000)
    for case in COST_CASES:
        out[case] = summary_ms(times[case]) | {"rounds_p50_ms": rounds[case]}
    one = statistics.median(rounds["one_tenant"])
    out["ratio_p50"] = statistics.median(rounds["many_tenants"]) / one
    out["ratio_interleaved_p50"] = statistics.median(rounds["many_interleaved"]) / one
    return out


async def _lease_cost_round(backend: str, sizes: Sizes, workdir: Path, case: str) -> list[float]:
    """Seconds per timed lease call of one round of ``case`` on a fresh database."""
    with fresh_database(backend, workdir) as dsn:
        store: Store = create_store(dsn, StoreConfig())
        await store.open()
        try:
            if case == "one_tenant":
                specs = [RunSpec("nap0", tenant="solo")] * sizes.cost_runs
            else:
                for i in range(sizes.tenants - sizes.backlogged):
                    await store.set_tenant(f"idle{i:04d}")
                per = sizes.cost_runs // sizes.backlogged
                busy = [f"busy{i:03d}" for i in range(sizes.backlogged)]
                order = (
                    [t for t in busy for _ in range(per)]
                    if case == "many_tenants"
                    else [t for _ in range(per) for t in busy]
                )
                specs = [RunSpec("nap0", tenant=t) for t in order]
            await store.submit(specs)
            times: list[float] = []
            for call in range(sizes.cost_calls + 20):
                t = time.perf_counter()
                leases = await store.lease("bench", 30.0, SLOTS)
                elapsed = time.perf_counter() - t
                assert len(leases) == SLOTS, (case, len(leases))
                await store.ack_many([Ack(x.run_id, x.epoch, None) for x in leases])
                if call >= 20:
                    times.append(elapsed)
            return times
        finally:
            await store.close()


# -------------------------------------------------------------------------------- report


def fmt(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "–"
    if x >= 10_000:
        return f"{x / 1000:.1f} s"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def print_tables(results: dict[str, Any]) -> None:
    print("\n### Quiet tenants' queue wait (submit → agent start), ms\n")
    print(
        "| backend | scenario | tenant | p50 | p95 | max | p95 submit→lease | "
        "p95 lease→start | p95 slot floor | p95 first chance | solo p95 | p95 − solo p95 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for backend, r in results["backends"].items():
        solo = r["solo"]["quiet"]
        for name in (
            "solo",
            "noisy_fair",
            "spread_fair",
            "noisy_express",
            "spread_express",
            "noisy_fifo",
            "spread_fifo",
        ):
            if name not in r:
                continue
            for tenant, q in r[name]["quiet"].items():
                w = q["wait"]
                ge = "≥ " if w["censored"] else ""
                delta = (
                    f"{ge}{fmt(w['p95_ms'] - solo[tenant]['wait']['p95_ms'])}"
                    if name != "solo"
                    else ""
                )
                print(
                    f"| {backend} | {name} | {tenant} | {ge}{fmt(w['p50_ms'])} | "
                    f"{ge}{fmt(w['p95_ms'])} | {ge}{fmt(w['max_ms'])} | "
                    f"{fmt(q['until_leased']['p95_ms'])} | "
                    f"{fmt(q['lease_to_agent_start']['p95_ms'])} | "
                    f"{fmt(q['slot_floor']['p95_ms'])} | "
                    f"{fmt(q['first_chance']['p95_ms'])} | "
                    f"{fmt(solo[tenant]['wait']['p95_ms'])} | {delta} |"
                )
    print("\n### Three backlogged tenants, weights 1:2:3 (32 slots)\n")
    print(
        "| backend | mode | runs/s N1 / N2 / N3 | mean in flight N1 / N2 / N3 (fair) | "
        "Jain, throughput/weight | Jain, in-flight/weight |"
    )
    print("|---|---|---|---|---|---|")
    for backend, r in results["backends"].items():
        for name in ("weighted_fair", "weighted_fifo"):
            w = r[name]
            tp = " / ".join(f"{w['throughput_per_s'][t]:.1f}" for t in WEIGHTED)
            fl = " / ".join(
                f"{w['mean_in_flight'][t]:.1f} ({w['fair_in_flight'][t]:.1f})" for t in WEIGHTED
            )
            print(
                f"| {backend} | {w['mode']} | {tp} | {fl} | "
                f"{w['jain_throughput_per_weight']:.4f} | "
                f"{w['jain_in_flight_per_weight']:.4f} |"
            )
    print("\n### Lease cost, store.lease(limit=8), ms (median round p50 / p95 over all)\n")
    print(
        "| backend | 1 tenant | 1,000 tenants (200 backlogged), backlogs one after another "
        "| ratio | the same, arrivals interleaved | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for backend, r in results["backends"].items():
        c = r["lease_cost"]
        print(
            f"| {backend} | {_cost_cell(c['one_tenant'])} | {_cost_cell(c['many_tenants'])} | "
            f"{c['ratio_p50']:.2f}x | {_cost_cell(c['many_interleaved'])} | "
            f"{c['ratio_interleaved_p50']:.2f}x |"
        )


def _cost_cell(case: dict[str, Any]) -> str:
    return f"{statistics.median(case['rounds_p50_ms']):.2f} / {case['p95_ms']:.2f}"


def revision() -> str:
    """The commit measured, with ``+dirty`` when src/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + ("+dirty" if dirty else "")


async def wait_quiet(max_wait: float, threshold: float) -> None:
    deadline = time.monotonic() + max_wait
    while (load := os.getloadavg()[0]) >= threshold and time.monotonic() < deadline:
        log(f"load average {load:.2f} >= {threshold}: waiting for a quieter machine")
        await asyncio.sleep(10)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 2 minutes)")
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before starting, wait up to this long for the 1-minute load average to drop "
        "below --quiet-load (other work on the machine skews latencies)",
    )
    parser.add_argument("--quiet-load", type=float, default=1.0)
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    workdir = Path(tempfile.mkdtemp(prefix="corral-fairness-"))
    schedule = quiet_schedule(sizes, seed=1)
    await wait_quiet(args.wait_quiet, args.quiet_load)
    started = time.time()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "revision": revision(),
        "sizes": asdict(sizes),
        "workers": WORKERS,
        "slots_per_worker": SLOTS,
        "express": {"slots_per_worker": EXPRESS_SLOTS, "below": EXPRESS_BELOW},
        "backends": {},
    }
    try:
        for backend in args.backends:
            r: dict[str, Any] = {}
            results["backends"][backend] = r
            scenarios: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
                (
                    "solo",
                    partial(
                        noisy, backend, "tenant", False, sizes, workdir, schedule, with_noisy=False
                    ),
                ),
                ("noisy_fair", partial(noisy, backend, "tenant", False, sizes, workdir, schedule)),
                ("spread_fair", partial(noisy, backend, "tenant", True, sizes, workdir, schedule)),
                (
                    "noisy_express",
                    partial(
                        noisy, backend, "tenant", False, sizes, workdir, schedule, express=True
                    ),
                ),
                (
                    "spread_express",
                    partial(noisy, backend, "tenant", True, sizes, workdir, schedule, express=True),
                ),
                ("noisy_fifo", partial(noisy, backend, "fifo", False, sizes, workdir, schedule)),
                ("spread_fifo", partial(noisy, backend, "fifo", True, sizes, workdir, schedule)),
                ("weighted_fair", partial(weighted, backend, "tenant", sizes, workdir)),
                ("weighted_fifo", partial(weighted, backend, "fifo", sizes, workdir)),
                ("lease_cost", partial(lease_cost, backend, sizes, workdir)),
            ]
            for name, scenario in scenarios:
                load_before = os.getloadavg()[0]
                t = time.time()
                r[name] = await scenario()
                r[name]["load_average_before"] = load_before
                log(f"{backend} {name}: {time.time() - t:.1f}s (load before {load_before:.2f})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_tables(results)
    print(f"\nwritten {args.out} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    asyncio.run(main())
