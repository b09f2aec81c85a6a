"""Service benchmark: HTTP submit latency of ``corral serve`` at a fixed rate, with no runs
executing (idle) and while runs execute (load), on SQLite and on PostgreSQL.

    python -m bench.service.run                      # 500 submits/s for 60 s, both backends
    python -m bench.service.run --duration 10        # a quick check
    python -m bench.service.run --backends sqlite --rate 300

Per backend and phase, a fresh database and a fresh ``corral serve --workers 0`` (an API-only
node). In the load phase, 200 long runs (agent ``work``: waiting, with a journal event every
second) are first put in flight on separate ``corral worker`` processes (2 x 100 slots) and
kept executing for the whole window. The client is open-loop: submit ``i`` is due at
``t0 + i / rate`` whatever the answers before it, over a pool of keep-alive connections.
Latency is measured from sending a request to its answer; the lag between the due time and the
send (client-side scheduling) is reported apart. After each window every accepted run id is
looked up in the store: an accepted run that is missing is a run lost.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from bench.stats import percentile

from corral import Corral
from corral.api import create_key

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "service.json"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
BENCH_DB = "corral_bench_service"
WARMUP_S = 3.0


# -- measurement -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    due: float
    sent: float
    done: float
    status: int | None  # None: the request failed without an HTTP answer
    run_id: str | None


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer: a minimal
    client, so the load generator's own CPU (it shares the machine) stays small."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"POST /v1/runs HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(
    url: str, key: str, rate: float, seconds: float, tag: str, connections: int = 64
) -> list[Sample]:
    """Submit at ``rate`` per second for ``seconds``, open loop: submit ``i`` is due at
    ``t0 + i / rate``; a free connection takes the oldest due submit. One Sample each."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    samples: list[Sample] = []

    async def connection() -> None:
        conn = Connection(host, port, key)
        try:
            while (item := await due.get()) is not None:
                i, when = item
                body = json.dumps({"agent": "work", "input": {"i": i, "tag": tag}}).encode()
                sent = time.perf_counter()
                status: int | None = None
                run_id = None
                try:
                    status, answer = await conn.post(body)
                    if status == 202:
                        run_id = json.loads(answer)["run_id"]
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                    conn.close()
                    conn = Connection(host, port, key)
                samples.append(Sample(when, sent, time.perf_counter(), status, run_id))
        finally:
            conn.close()

    pool = [asyncio.create_task(connection()) for _ in range(connections)]
    t0 = time.perf_counter() + 0.05
    for i in range(int(rate * seconds)):
        when = t0 + i / rate
        delay = when - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait((i, when))
    for _ in pool:
        due.put_nowait(None)
    await asyncio.gather(*pool)
    return samples


def summarise(samples: list[Sample], seconds: float) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 202]
    latency = [(s.done - s.sent) * 1000 for s in ok]
    lag = [max(0.0, s.sent - s.due) * 1000 for s in samples]
    span = (max(s.done for s in samples) - min(s.due for s in samples)) if samples else 0.0
    return {
        "submits": len(samples),
        "accepted": len(ok),
        "errors": len(samples) - len(ok),
        "error_statuses": sorted({str(s.status) for s in samples if s.status != 202}),
        "achieved_rate": round(len(ok) / span, 1) if span else 0.0,
        "target_rate": round(len(samples) / seconds, 1),
        "p50_ms": round(percentile(latency, 50), 2),
        "p90_ms": round(percentile(latency, 90), 2),
        "p99_ms": round(percentile(latency, 99), 2),
        "max_ms": round(max(latency), 2) if latency else math.nan,
        "client_lag_p99_ms": round(percentile(lag, 99), 2),
    }


# -- processes -----------------------------------------------------------------------------------


def _env(url: str) -> dict[str, str]:
    return dict(os.environ, CORRAL_DATABASE_URL=url, PYTHONPATH=str(REPO))


class Proc:
    def __init__(self, args: list[str], url: str, log: Path) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corral.cli.main", *args],
            cwd=REPO,
            env=_env(url),
            stdout=subprocess.DEVNULL,
            stderr=self._out,
        )

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(url: str, log: Path) -> tuple[Proc, str]:
    server = Proc(["serve", "--db", url, "--workers", "0", "--port", "0"], url, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = re.search(r"listening on (http://\S+)", log.read_text())
        if match:
            return server, match.group(1)
        if server.proc.poll() is not None:
            break
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"corral serve did not start:\n{log.read_text()}")


# -- databases ---------------------------------------------------------------------------------


def fresh_database(backend: str, workdir: Path, phase: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir / f'{phase}.db'}"
    base = os.environ.get("BENCH_PG_DSN", DEFAULT_DSN)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + BENCH_DB, parts.query, parts.fragment))


async def stored_ids(app: Corral, tenant: str) -> set[str]:
    ids: set[str] = set()
    async for page in app.iter_runs(tenant=tenant):
        ids.update(r.id for r in page)
    return ids


# -- one phase ---------------------------------------------------------------------------------


async def phase(backend: str, name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    url = fresh_database(backend, workdir, name)
    executing = args.executing if name == "load" else 0
    async with Corral(url) as app:
        _, key = await create_key(app.store, "client")
        workers: list[Proc] = []
        try:
            if executing:
                # long runs that keep every worker slot busy for the whole window
                hold = WARMUP_S + args.duration + 30
                await app.submit_many(
                    [
                        {
                            "agent": "work",
                            "tenant": "background",
                            "input": {"seconds": hold, "every": 1.0},
                        }
                        for _ in range(executing)
                    ]
                )
                per = math.ceil(executing / args.worker_processes)
                for i in range(args.worker_processes):
                    workers.append(
                        Proc(
                            [
                                "worker",
                                "bench.service.app:app",
                                "-c",
                                str(per),
                                "--lease-ttl",
                                "10",
                                "--drain-timeout",
                                "0",
                                "--poll-interval",
                                "0.2",
                            ],
                            url,
                            workdir / f"{backend}-{name}-worker{i}.log",
                        )
                    )
                async with asyncio.timeout(90):
                    while True:  # until every slot holds one of the long runs
                        if (await app.stats()).in_flight >= executing:
                            break
                        await asyncio.sleep(0.2)
            server, base_url = start_server(url, workdir / f"{backend}-{name}-serve.log")
            try:
                await drive(base_url, key, args.rate, WARMUP_S, "warmup")
                in_flight: list[int] = []

                async def watch() -> None:
                    while True:
                        in_flight.append((await app.stats()).in_flight)
                        await asyncio.sleep(2.0)

                watcher = asyncio.create_task(watch())
                cpu_before = cpu_seconds(server.proc.pid)
                samples = await drive(
                    base_url, key, args.rate, args.duration, "measured", args.connections
                )
                server_cpu = cpu_seconds(server.proc.pid) - cpu_before
                watcher.cancel()
            finally:
                server.stop()
            accepted = {s.run_id for s in samples if s.run_id is not None}
            stored = await stored_ids(app, "client")
            result = summarise(samples, args.duration)
            result["runs_lost"] = len(accepted - stored)
            result["executing_min"] = min(in_flight) if in_flight else 0
            result["executing_target"] = executing
            result["load_average_1m"] = round(os.getloadavg()[0], 2)
            result["server_cpu_ms_per_submit"] = round(server_cpu / max(1, len(samples)) * 1000, 3)
        finally:
            for w in workers:
                w.stop()
    return result


# -- report ------------------------------------------------------------------------------------


def print_table(report: dict[str, Any]) -> str:
    header = (
        "| backend | phase | runs executing | submits/s | p50 ms | p99 ms | max ms | "
        "errors | runs lost | p99 vs idle | server CPU ms/submit | load avg |"
    )
    lines = [header, "|" + "---|" * 12]
    for backend, phases in report["results"].items():
        idle = phases.get("idle", {}).get("p99_ms")
        for name, r in phases.items():
            ratio = f"{r['p99_ms'] / idle:.2f}x" if idle and name == "load" else "-"
            lines.append(
                f"| {backend} | {name} | {r['executing_min']} | {r['achieved_rate']} | "
                f"{r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['errors']} | "
                f"{r['runs_lost']} | {ratio} | {r['server_cpu_ms_per_submit']} | "
                f"{r['load_average_1m']} |"
            )
    table = "\n".join(lines)
    print(table)
    return table


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    parser.add_argument("--rate", type=float, default=500.0, help="submits per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--executing", type=int, default=200, help="runs executing under load")
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64, help="client keep-alive pool")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {
            "rate": args.rate,
            "duration": args.duration,
            "warmup": WARMUP_S,
            "connections": args.connections,
            "executing": args.executing,
            "worker_processes": args.worker_processes,
        },
        "results": {},
    }
    with tempfile.TemporaryDirectory(prefix="corral-bench-service-") as tmp:
        workdir = Path(tmp)
        for backend in args.backends:
            report["results"][backend] = {}
            for name in ("idle", "load"):
                print(
                    f"{backend} / {name}: {args.rate:g} submits/s for {args.duration:g} s",
                    file=sys.stderr,
                )
                report["results"][backend][name] = await phase(backend, name, args, workdir)
    report["markdown_table"] = print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
