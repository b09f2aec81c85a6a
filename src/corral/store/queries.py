"""Loads the named queries of one SQL dialect from ``sql/<dialect>/queries.sql``.

A file is a sequence of ``-- name: <query_name>`` headers, each followed by one statement.
Queries are written with ``:param`` placeholders; psycopg wants ``%(param)s``, so the
PostgreSQL set is rewritten on load (a ``::type`` cast is left alone).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def parse_queries(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = "\n".join(
            line for line in body.strip().splitlines() if not line.lstrip().startswith("--")
        ).strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = statement.rstrip(";")
    return queries


@cache
def load_queries(dialect: str) -> dict[str, str]:
    text = resources.files("corral.store").joinpath("sql", dialect, "queries.sql").read_text()
    queries = parse_queries(text)
    if dialect == "postgres":
        queries = {name: _PARAM.sub(r"%(\1)s", sql) for name, sql in queries.items()}
    return queries


def load_migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every numbered migration file, in order."""
    folder = resources.files("corral.store").joinpath("migrations", dialect)
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d+)_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return found
