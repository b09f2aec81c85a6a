"""Database URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``postgresql://...``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from corral.errors import InvalidDatabaseURL

DEFAULT_URL = "sqlite:///corral.db"


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    dialect: Literal["sqlite", "postgres"]
    #: file path for SQLite, the libpq connection string for PostgreSQL
    target: str


def parse_database_url(url: str) -> DatabaseURL:
    if not isinstance(url, str) or not url.strip():
        raise InvalidDatabaseURL("database URL is empty")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidDatabaseURL(
            f"not a database URL: {url!r} (expected sqlite:///path.db or postgresql://...)"
        )
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise InvalidDatabaseURL(
                f"SQLite URL needs a path: {url!r} (sqlite:///relative.db or sqlite:////abs.db)"
            )
        path = rest[1:].split("?", 1)[0]
        if not path:
            raise InvalidDatabaseURL(f"SQLite URL needs a file name: {url!r}")
        return DatabaseURL("sqlite", path)
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises on a non-numeric port
        except ValueError as exc:
            raise InvalidDatabaseURL(f"malformed PostgreSQL URL {url!r}: {exc}") from exc
        if not (parts.hostname or "host=" in (parts.query or "")):
            raise InvalidDatabaseURL(f"PostgreSQL URL needs a host: {url!r}")
        return DatabaseURL("postgres", url)
    raise InvalidDatabaseURL(
        f"unsupported database scheme {scheme!r} in {url!r} (use sqlite or postgresql)"
    )
