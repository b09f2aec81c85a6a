"""One adapter per system under test. Each gives the harness the same verbs:

- ``fresh()``: an async context with a brand-new store (own database) and an open client;
- ``enqueue_one`` / ``enqueue_batch``: the library's own single and bulk submit calls;
- ``worker_argv(concurrency)``: the command line (and env) of one separate worker process,
  using the library's own CLI where it has one;
- ``remaining()``: jobs not finished yet, read from the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from bench.queue.common import drop_database, dsn_for, recreate_database

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + extra if extra else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class System:
    name: ClassVar[str]
    label: ClassVar[str]
    has_pickup: ClassVar[bool] = True
    has_c1: ClassVar[bool] = True
    #: the PostgreSQL database the system lives in (None: not on PostgreSQL)
    pg_db: str | None = None

    def settings(self, concurrency: int) -> dict[str, Any]:
        return {}

    @contextlib.asynccontextmanager
    async def fresh(self) -> AsyncIterator[System]:
        raise NotImplementedError
        yield self

    async def enqueue_one(self, agent: str, i: int) -> None:
        raise NotImplementedError

    async def enqueue_batch(self, agent: str, ids: list[int]) -> None:
        raise NotImplementedError

    def worker_argv(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    async def remaining(self) -> int:
        raise NotImplementedError


# --------------------------------------------------------------------------------------- corral


class CorralSystem(System):
    """corral through its public API; worker = ``corral worker`` CLI."""

    has_submit_under_load = True

    def __init__(self, backend: str) -> None:
        assert backend in ("postgres", "sqlite")
        self.backend = backend
        self.name = f"corral-{'pg' if backend == 'postgres' else 'sqlite'}"
        self.pg_db = "bench_corral" if backend == "postgres" else None
        self.label = f"corral ({'PostgreSQL' if backend == 'postgres' else 'SQLite'})"
        self.dsn = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.app: Any = None
        self.conn: Any = None

    def settings(self, concurrency: int) -> dict[str, Any]:
        return {
            "store": self.backend,
            "worker": f"corral worker bench.queue.corral_app:app --concurrency {concurrency} "
            "--lease-ttl 30",
            "enqueue_single": "app.submit(agent, input)",
            "enqueue_batch": "app.submit_many([...100 specs...]) (one transaction)",
        }

    @contextlib.asynccontextmanager
    async def fresh(self) -> AsyncIterator[System]:
        if self.backend == "postgres":
            self.dsn = recreate_database("bench_corral")
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="corral-bench-sqlite-")
            self.dsn = f"sqlite:///{self._tmp.name}/bench.db"
        os.environ["BENCH_CORRAL_DSN"] = self.dsn
        from corral import Corral

        self.app = Corral(self.dsn, lease_ttl=30.0)
        try:
            async with self.app:  # applies the migrations
                if self.backend == "postgres":
                    self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                else:
                    self.conn = sqlite3.connect(
                        f"file:{self._tmp.name}/bench.db?mode=ro",
                        uri=True,
                        timeout=30,
                        isolation_level=None,
                    )
                yield self
        finally:
            if self.conn is not None:
                if self.backend == "postgres":
                    await self.conn.close()
                else:
                    self.conn.close()
            self.conn = None
            self.app = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
            elif self.backend == "postgres":
                drop_database("bench_corral")

    async def enqueue_one(self, agent: str, i: int) -> None:
        await self.app.submit(agent, _corral_input(agent, i))

    async def enqueue_batch(self, agent: str, ids: list[int]) -> None:
        await self.app.submit_many(
            [{"agent": agent, "input": _corral_input(agent, i)} for i in ids]
        )

    def worker_argv(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        env = _base_env()
        env["BENCH_CORRAL_DSN"] = self.dsn
        argv = [
            str(BIN / "corral"),
            "worker",
            "bench.queue.corral_app:app",
            "--concurrency",
            str(concurrency),
            "--lease-ttl",
            "30",
        ]
        return argv, env

    async def remaining(self) -> int:
        # Read straight from corral_runs (as for the peers' tables) rather than app.stats(),
        # which also aggregates per tenant: the harness polls this every 50 ms.
        if self.backend == "postgres":
            cur = await self.conn.execute(REMAINING_SQL)
            row = await cur.fetchone()
        else:
            row = self.conn.execute(REMAINING_SQL).fetchone()
        return int(row[0])

    async def in_flight(self) -> int:
        s = await self.app.stats()
        return int(s.in_flight)


REMAINING_SQL = "SELECT count(*) FROM corral_runs WHERE status IN ('queued', 'running', 'waiting')"


def _corral_input(agent: str, i: int) -> Any:
    if agent == "sleep":
        return {"s": float(i)}
    return {"i": i}


# ------------------------------------------------------------------------------------- PgQueuer


class PgQueuerSystem(System):
    """PgQueuer 1.6 with asyncpg (its recommended driver); worker = ``pgq run`` CLI."""

    name = "pgqueuer"
    label = "PgQueuer 1.6"
    DB = "bench_pgqueuer"
    pg_db = DB

    def __init__(self, batch_size_c32: int = 16) -> None:
        self.batch_size_c32 = batch_size_c32
        self.dsn = ""
        self.conn: Any = None
        self.q: Any = None

    def _worker_opts(self, concurrency: int) -> dict[str, Any]:
        if concurrency == 1:
            # max_concurrent_tasks must be >= 2 * batch_size, so a per-process cap of 1 is not
            # expressible; the documented way to serialise is the entrypoint's concurrency_limit.
            return {"batch_size": 1, "max_concurrent_tasks": None, "entrypoint_limit": 1}
        bs = min(self.batch_size_c32, max(1, concurrency // 2))
        return {"batch_size": bs, "max_concurrent_tasks": concurrency, "entrypoint_limit": 0}

    def settings(self, concurrency: int) -> dict[str, Any]:
        o = self._worker_opts(concurrency)
        return {
            "driver": "asyncpg (AsyncpgDriver, one dedicated connection for the QueueManager)",
            "worker": " ".join(self.worker_argv(concurrency)[0][1:]),
            "noop entrypoint concurrency_limit": o["entrypoint_limit"],
            "durability": "durable (default)",
            "autovacuum": "pgq autovac settings applied (Queries.optimize_autovacuum)",
            "log level": "WARNING",
            "runner": "pgqueuer.run() under uvloop, as `pgq run` does (the 1.6.0 CLI fails "
            "to start with the installed typer)",
            "enqueue_single": "Queries.enqueue(entrypoint, payload, priority)",
            "enqueue_batch": "Queries.enqueue([100 entrypoints], [100 payloads], [100 priorities])",
        }

    @contextlib.asynccontextmanager
    async def fresh(self) -> AsyncIterator[System]:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        self.dsn = recreate_database(self.DB)
        self.conn = await asyncpg.connect(self.dsn)
        try:
            self.q = Queries(AsyncpgDriver(self.conn))
            await self.q.install()
            await self.q.optimize_autovacuum()
            yield self
        finally:
            await self.conn.close()
            self.conn = self.q = None
            drop_database(self.DB)

    async def enqueue_one(self, agent: str, i: int) -> None:
        await self.q.enqueue(agent, str(i).encode(), 0)

    async def enqueue_batch(self, agent: str, ids: list[int]) -> None:
        await self.q.enqueue([agent] * len(ids), [str(i).encode() for i in ids], [0] * len(ids))

    def worker_argv(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        o = self._worker_opts(concurrency)
        env = _base_env()
        env["BENCH_PGQ_DSN"] = self.dsn
        env["BENCH_PGQ_ENTRYPOINT_LIMIT"] = str(o["entrypoint_limit"])
        argv = [
            sys.executable,
            "-m",
            "bench.queue.pgq_app",
            "--batch-size",
            str(o["batch_size"]),
        ]
        if o["max_concurrent_tasks"]:
            argv += ["--max-concurrent-tasks", str(o["max_concurrent_tasks"])]
        return argv, env

    async def remaining(self) -> int:
        # Finished jobs are moved out of the queue table into pgqueuer_log.
        return int(await self.conn.fetchval("SELECT count(*) FROM pgqueuer"))


# -------------------------------------------------------------------------------- Procrastinate


class ProcrastinateSystem(System):
    """Procrastinate 3.x with its psycopg connector; worker = ``procrastinate worker`` CLI."""

    name = "procrastinate"
    label = "Procrastinate 3"
    DB = "bench_procrastinate"
    pg_db = DB

    def __init__(self) -> None:
        self.dsn = ""
        self.app: Any = None
        self.conn: Any = None

    @staticmethod
    def pool_max(concurrency: int) -> int:
        # psycopg_pool's default size (4), which PsycopgConnector() gets when not told
        # otherwise. A sweep at concurrency 32 (5,000 jobs) measured 158 jobs/s with 4,
        # 137 with 10 and 113 with 34 connections: a larger pool does not help.
        return 4

    def settings(self, concurrency: int) -> dict[str, Any]:
        return {
            "connector": f"PsycopgConnector(max_size={self.pool_max(concurrency)})",
            "worker": " ".join(self.worker_argv(concurrency)[0][1:]),
            "listen_notify": True,
            "fetch_job_polling_interval": "5 s (default; LISTEN/NOTIFY wakes the worker)",
            "delete_jobs": "never (default)",
            "enqueue_single": "task.defer_async(...)",
            "enqueue_batch": "task.batch_defer_async(*100 kwargs)",
        }

    @contextlib.asynccontextmanager
    async def fresh(self) -> AsyncIterator[System]:
        self.dsn = recreate_database(self.DB)
        os.environ["BENCH_PROCRASTINATE_DSN"] = self.dsn
        import procrastinate

        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=self.dsn, min_size=2, max_size=4)
        )
        try:
            async with self.app.open_async():
                await self.app.schema_manager.apply_schema_async()
                self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                yield self
        finally:
            if self.conn is not None:
                await self.conn.close()
            self.conn = None
            drop_database(self.DB)

    def _kwargs(self, agent: str, i: int) -> dict[str, Any]:
        if agent == "stamp":
            return {"i": i}
        if agent == "sleep":
            return {"s": float(i)}
        return {}

    async def enqueue_one(self, agent: str, i: int) -> None:
        await self.app.configure_task(agent).defer_async(**self._kwargs(agent, i))

    async def enqueue_batch(self, agent: str, ids: list[int]) -> None:
        await self.app.configure_task(agent).batch_defer_async(
            *(self._kwargs(agent, i) for i in ids)
        )

    def worker_argv(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        env = _base_env()
        env["BENCH_PROCRASTINATE_DSN"] = self.dsn
        env["BENCH_PROCRASTINATE_POOL_MAX"] = str(self.pool_max(concurrency))
        argv = [
            str(BIN / "procrastinate"),
            "--app=bench.queue.procrastinate_app.app",
            "worker",
            "--concurrency",
            str(concurrency),
            "--listen-notify",
        ]
        return argv, env

    async def remaining(self) -> int:
        cur = await self.conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        )
        row = await cur.fetchone()
        return int(row[0])


# ---------------------------------------------------------------------------------------- naive


class NaiveSystem(System):
    """A plain psycopg loop: 100-row SKIP LOCKED leases, one-statement batched acks."""

    name = "naive"
    label = "naive SKIP LOCKED loop"
    has_pickup = False
    has_c1 = False
    DB = "bench_naive"
    pg_db = DB

    def __init__(self) -> None:
        self.dsn = ""
        self.conn: Any = None

    def settings(self, concurrency: int) -> dict[str, Any]:
        return {
            "worker": f"python -m bench.queue.naive --concurrency {concurrency} --batch 100",
            "lease": "UPDATE jobs SET status='running' WHERE id IN (SELECT id ... FOR UPDATE "
            "SKIP LOCKED LIMIT 100) RETURNING id, payload",
            "ack": "UPDATE jobs SET status='done' WHERE id = ANY(%s) (one statement per batch)",
            "enqueue_single": "INSERT INTO jobs (payload) VALUES (%s)",
            "enqueue_batch": "INSERT INTO jobs (payload) SELECT unnest(%s::jsonb[]) (100 rows)",
        }

    @contextlib.asynccontextmanager
    async def fresh(self) -> AsyncIterator[System]:
        from bench.queue.naive import SCHEMA

        self.dsn = recreate_database(self.DB)
        self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        try:
            await self.conn.execute(SCHEMA)
            yield self
        finally:
            await self.conn.close()
            self.conn = None
            drop_database(self.DB)

    async def enqueue_one(self, agent: str, i: int) -> None:
        await self.conn.execute(
            "INSERT INTO jobs (payload) VALUES (%s::jsonb)", (json.dumps({"i": i}),)
        )

    async def enqueue_batch(self, agent: str, ids: list[int]) -> None:
        await self.conn.execute(
            "INSERT INTO jobs (payload) SELECT unnest(%s::jsonb[])",
            ([json.dumps({"i": i}) for i in ids],),
        )

    def worker_argv(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        env = _base_env()
        argv = [
            sys.executable,
            "-m",
            "bench.queue.naive",
            "--dsn",
            self.dsn,
            "--concurrency",
            str(concurrency),
            "--batch",
            "100",
        ]
        return argv, env

    async def remaining(self) -> int:
        cur = await self.conn.execute("SELECT count(*) FROM jobs WHERE status <> 'done'")
        row = await cur.fetchone()
        return int(row[0])


def all_systems() -> list[System]:
    return [
        CorralSystem("postgres"),
        CorralSystem("sqlite"),
        PgQueuerSystem(),
        ProcrastinateSystem(),
        NaiveSystem(),
    ]


__all__ = [
    "CorralSystem",
    "NaiveSystem",
    "PgQueuerSystem",
    "ProcrastinateSystem",
    "System",
    "all_systems",
    "dsn_for",
]
