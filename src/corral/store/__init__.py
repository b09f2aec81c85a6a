"""Storage: the store contract and its SQLite and PostgreSQL backends."""

from __future__ import annotations

import dataclasses

from corral.clock import Clock, system_clock
from corral.config import StoreConfig
from corral.store.contract import Store
from corral.store.url import DEFAULT_URL, DatabaseURL, parse_database_url


def create_store(
    url: str = DEFAULT_URL, config: StoreConfig | None = None, clock: Clock = system_clock
) -> Store:
    """A store for ``url`` (not yet opened). Raises InvalidDatabaseURL for a bad URL."""
    parsed = parse_database_url(url)
    if parsed.dialect == "sqlite":
        from corral.store.sqlite import SQLiteStore

        config = config or StoreConfig()
        if parsed.busy_timeout is not None:
            config = dataclasses.replace(config, busy_timeout=parsed.busy_timeout)
        if parsed.lock_poll is not None:
            config = dataclasses.replace(config, lock_poll=parsed.lock_poll)
        return SQLiteStore(parsed.target, config, clock)
    from corral.store.postgres import PostgresStore

    if parsed.pool_size is not None:
        config = dataclasses.replace(config or StoreConfig(), pool_size=parsed.pool_size)
    return PostgresStore(parsed.target, config, clock)


__all__ = ["DEFAULT_URL", "DatabaseURL", "Store", "create_store", "parse_database_url"]
