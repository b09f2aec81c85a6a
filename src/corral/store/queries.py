"""Loads the named queries of one SQL dialect from the ``*.sql`` files in ``sql/<dialect>/``.

Each part of the store keeps its queries in a file of its own (``queries.sql`` for the queue,
others beside it); a name must be unique across a dialect's files. A file is a sequence
of ``-- name: <query_name>`` headers, each followed by one statement. A ``-- fragment: <name>``
header is followed instead by a piece of SQL that the queries after it (in that file, and in
the dialect's files read after it, in name order) write as ``{{name}}``: one definition of an
expression several statements must agree on.
Queries are written with ``:param`` placeholders; psycopg wants ``%(param)s``, so the
PostgreSQL set is rewritten on load (a ``::type`` cast is left alone).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

#: queries only one dialect has (mostly a faster form of something the shared logic also does)
DIALECT_ONLY: dict[str, frozenset[str]] = {
    "postgres": frozenset(
        {
            "append_one_relaxed",
            "lease_fast",
            "listen_channels",
            "ack_runs_batch",
            "ack_fast",
            "ack_lease_fast",
            "use_generic_plans",
            "submit_one",
            "take_tenant_runs",
            "pick_oldest_runs",
            "handoff_channel",
            "offer_slots",
            "withdraw_offer",
            "renew_offer",
            "offer_taken",
            "drop_dead_offers",
        }
    ),
    # PostgreSQL learns of light work from notification payloads instead; it takes runs one
    # tenant per statement (take_tenant_runs, with FOR UPDATE SKIP LOCKED), and merges the
    # tenants' queues for fifo in one statement (pick_oldest_runs, with LATERAL)
    "sqlite": frozenset(
        {
            "light_work",
            "take_tenants_runs",
            "tenant_runs_pick",
            "oldest_heads",
            "merge_oldest_picks",
            "tenant_oldest_pick",
        }
    ),
}

_HEADER = re.compile(r"^-- (name|fragment): (\w+)\s*$", re.MULTILINE)
_USE = re.compile(r"\{\{(\w+)\}\}")
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_TOKEN = re.compile(r"('(?:[^']|'')*')|(\s*--[^\n]*)|(\s+)")


def parse_queries(text: str, fragments: dict[str, str] | None = None) -> dict[str, str]:
    """The named queries of ``text``. ``fragments``: those of the files read before it; the
    fragments ``text`` defines are added to it."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    fragments = {} if fragments is None else fragments
    for kind, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True):
        statement = "\n".join(
            line for line in body.strip().splitlines() if not line.lstrip().startswith("--")
        ).strip()
        defined = fragments if kind == "fragment" else queries
        if name in defined:
            raise ValueError(f"{kind} {name!r} is defined twice")
        defined[name] = _compact(_USE.sub(lambda m: _fragment(fragments, m.group(1)), statement))
        if kind == "name":
            queries[name] = queries[name].rstrip(";").rstrip()
    return queries


def _compact(sql: str) -> str:
    """``sql`` without comments, each run of whitespace outside string literals made one
    space. psycopg parses a statement's placeholders once and caches the result only for
    statements of at most 4,096 characters: the longest hot statements must stay under it.
    One left-to-right scan tells literals from comments (a quote in a comment, ``--`` in a
    literal); dollar-quoted and E'' strings are not understood, so they are refused."""
    if "$$" in sql or re.search(r"(?<![\w'])[Ee]'", sql):
        raise ValueError("queries may not use dollar-quoted or E'' strings")

    def keep(m: re.Match[str]) -> str:
        literal, comment = m.group(1), m.group(2)
        return literal if literal else "" if comment else " "

    return _TOKEN.sub(keep, sql).strip()


def _fragment(fragments: dict[str, str], name: str) -> str:
    if name not in fragments:
        raise ValueError(f"fragment {name!r} is used before it is defined")
    return fragments[name]


def to_dialect(sql: str, dialect: str) -> str:
    """Rewrite ``:param`` placeholders for the driver of ``dialect``."""
    return _PARAM.sub(r"%(\1)s", sql) if dialect == "postgres" else sql


@cache
def load_queries(dialect: str) -> dict[str, str]:
    folder = resources.files("corral.store").joinpath("sql", dialect)
    queries: dict[str, str] = {}
    fragments: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, sql in parse_queries(entry.read_text(), fragments).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined twice in sql/{dialect}")
            queries[name] = sql
    if dialect == "postgres":
        queries = {name: to_dialect(sql, dialect) for name, sql in queries.items()}
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
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"{dialect} migrations reuse a version number: {versions}")
    return found
