"""A pending migration on PostgreSQL never stops traffic for long: a table it alters must be
locked exclusively, and while it waits for that lock every statement on the table waits behind
it. So it waits at most ``migration_lock_timeout`` at a time, gives way between tries, and in
the end gives up with a StoreUnavailable that names the long transaction in its way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest

from corral.config import StoreConfig
from corral.errors import InvalidInput, StoreUnavailable
from corral.models import RunSpec
from corral.store import create_store
from tests.support.postgres import fresh_schema

pytestmark = pytest.mark.timeout(60)

LOCK_WAIT = 0.2


@pytest.fixture
def migrated(pg_dsn: str) -> Iterator[str]:
    """A schema with every migration but the last applied (its column is absent)."""
    with fresh_schema(pg_dsn) as dsn:

        async def build() -> None:
            store = create_store(dsn)
            await store.open()
            await store.close()

        asyncio.run(build())
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE corral_runs DROP COLUMN timeout")
            conn.execute("DELETE FROM corral_schema_migrations WHERE version = 12")
        yield dsn


async def test_a_migration_blocked_by_a_long_transaction_gives_way_then_names_it(
    migrated: str,
) -> None:
    # traffic of the processes already running (the old version): reads of the runs table
    serving = await psycopg.AsyncConnection.connect(migrated, autocommit=True)
    holder = await psycopg.AsyncConnection.connect(migrated)
    try:
        # a long transaction that read the runs table: its lock outlives the statement
        await holder.execute("SELECT count(*) FROM corral_runs")
        upgrading = create_store(migrated, StoreConfig(migration_lock_timeout=LOCK_WAIT))
        opening = asyncio.create_task(upgrading.open())
        slowest = 0.0
        while not opening.done():
            began = time.monotonic()
            await serving.execute("SELECT count(*) FROM corral_runs")
            slowest = max(slowest, time.monotonic() - began)
            await asyncio.sleep(0.01)
        with pytest.raises(StoreUnavailable) as raised:
            await opening
        await upgrading.close()
        message = str(raised.value)
        assert "migration 012_run_timeout.sql could not lock the tables it changes" in message
        assert "idle in transaction" in message and "SELECT count(*) FROM corral_runs" in message
        # the traffic waited behind the migration for one lock wait at a time, never longer
        assert slowest < LOCK_WAIT + 0.5, slowest
        await holder.rollback()
        # with the long transaction gone, the next start migrates
        upgrading = create_store(migrated, StoreConfig(migration_lock_timeout=LOCK_WAIT))
        await upgrading.open()
        try:
            (run_id,) = await upgrading.submit([RunSpec("echo", tenant="acme", timeout=3.0)])
            run = await upgrading.get(run_id)
            assert run is not None and run.timeout == 3.0
        finally:
            await upgrading.close()
    finally:
        await holder.close()
        await serving.close()


async def test_a_lock_released_between_tries_lets_the_migration_through(migrated: str) -> None:
    holder = await psycopg.AsyncConnection.connect(migrated)
    try:
        await holder.execute("SELECT count(*) FROM corral_runs")
        upgrading = create_store(migrated, StoreConfig(migration_lock_timeout=LOCK_WAIT))
        opening = asyncio.create_task(upgrading.open())
        await asyncio.sleep(LOCK_WAIT * 1.5)  # the first try has timed out by now
        assert not opening.done()
        await holder.rollback()
        await opening
        await upgrading.close()
    finally:
        await holder.close()
    with psycopg.connect(migrated) as conn:
        applied = conn.execute(
            "SELECT count(*) FROM corral_schema_migrations WHERE version = 12"
        ).fetchone()
    assert applied == (1,)


def test_the_lock_wait_must_be_positive() -> None:
    with pytest.raises(InvalidInput, match="migration_lock_timeout"):
        StoreConfig(migration_lock_timeout=0)
