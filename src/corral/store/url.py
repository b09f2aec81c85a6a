"""Database URLs: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``postgresql://...``.

A few store settings can ride on the URL, so that every command given ``--db`` (or
``$CORRAL_DATABASE_URL``) gets them: ``pool_size`` on PostgreSQL, ``busy_timeout`` and
``lock_poll`` (seconds) on SQLite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from corral.errors import InvalidDatabaseURL

DEFAULT_URL = "sqlite:///corral.db"
#: query parameters of a PostgreSQL URL that corral reads (and takes out before libpq sees it)
POOL_SIZE = "pool_size"
MAX_POOL_SIZE = 1000
#: query parameters of a SQLite URL that corral reads, in seconds (StoreConfig's fields)
SQLITE_SECONDS = ("busy_timeout", "lock_poll")
#: the longest of them a URL may give: a day (a wait for a lock longer than that is a hang)
MAX_SQLITE_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    dialect: Literal["sqlite", "postgres"]
    #: file path for SQLite, the libpq connection string for PostgreSQL
    target: str
    #: PostgreSQL: ``?pool_size=N``, the most connections each of a process's two pools opens
    pool_size: int | None = None
    #: SQLite: ``?busy_timeout=S&lock_poll=S``, the StoreConfig fields of those names
    busy_timeout: float | None = None
    lock_poll: float | None = None


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
        path, _, params = rest[1:].partition("?")
        if not path:
            raise InvalidDatabaseURL(f"SQLite URL needs a file name: {url!r}")
        settings = _sqlite_settings(params, url)
        return DatabaseURL(
            "sqlite",
            path,
            busy_timeout=settings.get("busy_timeout"),
            lock_poll=settings.get("lock_poll"),
        )
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises on a non-numeric port
        except ValueError as exc:
            raise InvalidDatabaseURL(f"malformed PostgreSQL URL {url!r}: {exc}") from exc
        if not (parts.hostname or "host=" in (parts.query or "")):
            raise InvalidDatabaseURL(f"PostgreSQL URL needs a host: {url!r}")
        query = parse_qsl(parts.query, keep_blank_values=True)
        sizes = [v for k, v in query if k == POOL_SIZE]
        if not sizes:
            return DatabaseURL("postgres", url)
        pool_size = _pool_size(sizes[-1], url)
        rest = urlencode([(k, v) for k, v in query if k != POOL_SIZE])
        return DatabaseURL("postgres", urlunsplit(parts._replace(query=rest)), pool_size)
    raise InvalidDatabaseURL(
        f"unsupported database scheme {scheme!r} in {url!r} (use sqlite or postgresql)"
    )


def _sqlite_settings(query: str, url: str) -> dict[str, float]:
    """The settings a SQLite URL's query gives. Any other parameter is refused rather than
    ignored: one mistyped, or meant for another driver (``?mode=ro``), would do nothing."""
    settings: dict[str, float] = {}
    for key, text in parse_qsl(query, keep_blank_values=True):
        if key not in SQLITE_SECONDS:
            raise InvalidDatabaseURL(
                f"unknown SQLite URL parameter {key!r} in {url!r} "
                f"(corral reads {' and '.join(SQLITE_SECONDS)}, in seconds)"
            )
        try:
            seconds = float(text)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_SQLITE_SECONDS:  # NaN fails it too
            raise InvalidDatabaseURL(
                f"{key} must be a number of seconds from 0 to {MAX_SQLITE_SECONDS:g}, "
                f"not {text!r} in {url!r}"
            )
        settings[key] = seconds
    return settings


def _pool_size(text: str, url: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_POOL_SIZE:
        raise InvalidDatabaseURL(
            f"{POOL_SIZE} must be a whole number from 1 to {MAX_POOL_SIZE}, not {text!r} in {url!r}"
        )
    return size
