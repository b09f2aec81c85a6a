"""Shared helpers for the queue benchmark: DSNs, databases, percentiles, stamp files."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from bench.stats import percentile

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def base_dsn() -> str:
    return os.environ.get("BENCH_PG_DSN", DEFAULT_DSN)


def dsn_for(dbname: str) -> str:
    """The base DSN with its database replaced by ``dbname``."""
    parts = urlsplit(base_dsn())
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def recreate_database(dbname: str) -> str:
    """Drop (forcing out any session) and create ``dbname``; return its DSN."""
    with psycopg.connect(base_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{dbname}"')
    return dsn_for(dbname)


def drop_database(dbname: str) -> None:
    with psycopg.connect(base_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def latency_summary(samples_s: list[float]) -> dict[str, float | int]:
    ms = [s * 1000.0 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


def write_stamp(key: object) -> None:
    """Called inside a job the moment it starts: append ``key<TAB>time.time()``.

    The file is named by ``BENCH_STAMP_FILE``; small O_APPEND writes do not interleave.
    """
    t = time.time()
    path = os.environ.get("BENCH_STAMP_FILE")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{key}\t{t!r}\n".encode())
    finally:
        os.close(fd)


def read_stamps(path: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        k, _, v = line.partition("\t")
        if not v:
            continue
        try:
            key = int(k)
        except ValueError:
            continue
        # keep the first start (a redelivery would be a second line)
        out.setdefault(key, float(v))
    return out
