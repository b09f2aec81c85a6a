from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.store import Store, create_store
from tests.support.postgres import fresh_schema, postgres_server

os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'corral.db'}"
    else:
        with fresh_schema(request.getfixturevalue("pg_dsn")) as dsn:
            yield dsn


@pytest.fixture
def second_db_url(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Another empty database on the same backend as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
    else:
        with fresh_schema(request.getfixturevalue("pg_dsn")) as dsn:
            yield dsn


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(db_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    """An open store on a fake clock, on each backend."""
    s = create_store(db_url, StoreConfig(), clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
