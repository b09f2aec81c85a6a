"""Database URLs at the edge: corral's own ``pool_size`` parameter of a PostgreSQL URL is read,
validated and taken out before libpq sees the URL; everything else goes through as given."""

from __future__ import annotations

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
