"""Database URLs at the edge: corral's own ``pool_size`` parameter of a PostgreSQL URL is read,
validated and taken out before libpq sees the URL; everything else goes through as given. A
SQLite URL's ``busy_timeout`` and ``lock_poll`` are read and validated; any other parameter is
refused, not ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral import Corral
from corral.errors import InvalidDatabaseURL
from corral.store import parse_database_url


def test_pool_size_is_read_and_taken_out_of_the_libpq_url() -> None:
    parsed = parse_database_url("postgresql://u@db:5432/app?sslmode=disable&pool_size=3")
    assert parsed.pool_size == 3
    assert parsed.target == "postgresql://u@db:5432/app?sslmode=disable"
    plain = parse_database_url("postgresql://u@db/app?sslmode=disable")
    assert (plain.pool_size, plain.target) == (None, "postgresql://u@db/app?sslmode=disable")
    assert Corral("postgresql://db/app?pool_size=2").store.config.pool_size == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["0", "-1", "many", "", "1001", "2.5"])
def test_a_bad_pool_size_is_a_named_error(value: str) -> None:
    with pytest.raises(InvalidDatabaseURL, match="pool_size must be a whole number"):
        parse_database_url(f"postgresql://db/app?pool_size={value}")


def test_sqlite_lock_settings_are_read_from_the_url() -> None:
    parsed = parse_database_url("sqlite:///data/corral.db?lock_poll=0&busy_timeout=5")
    assert (parsed.target, parsed.lock_poll, parsed.busy_timeout) == ("data/corral.db", 0.0, 5.0)
    config = Corral("sqlite:///data/corral.db?lock_poll=0.01").store.config  # type: ignore[attr-defined]
    assert (config.lock_poll, config.busy_timeout) == (0.01, 30.0)  # the other keeps its default
    plain = parse_database_url("sqlite:///corral.db")
    assert (plain.lock_poll, plain.busy_timeout) == (None, None)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("lock_poll=soon", "lock_poll must be a number of seconds"),
        ("busy_timeout=-1", "busy_timeout must be a number of seconds"),
        ("busy_timeout=nan", "busy_timeout must be a number of seconds"),
        ("lock_poll=1e9", "lock_poll must be a number of seconds"),
        ("mode=ro", "unknown SQLite URL parameter 'mode'"),
        ("lock_pol=0", "unknown SQLite URL parameter 'lock_pol'"),
    ],
)
def test_a_bad_sqlite_url_parameter_is_a_named_error(query: str, message: str) -> None:
    with pytest.raises(InvalidDatabaseURL, match=message):
        parse_database_url(f"sqlite:///corral.db?{query}")


async def test_a_store_opened_with_url_settings_works(tmp_path: Path) -> None:
    async with Corral(f"sqlite:///{tmp_path / 'c.db'}?lock_poll=0&busy_timeout=2") as app:
        run_id = await app.submit("echo", {"x": 1})
        assert (await app.get(run_id)).input == {"x": 1}
