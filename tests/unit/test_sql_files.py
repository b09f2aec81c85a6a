"""The SQL files: the same query names in every dialect, parameters that parse, migrations
numbered once."""

from __future__ import annotations

import re

import pytest
from psycopg import _queries as psycopg_queries

from corral.store.migrate import split_statements
from corral.store.queries import DIALECT_ONLY, load_migrations, load_queries, parse_queries

DIALECTS = ["sqlite", "postgres"]


def test_every_dialect_has_the_same_query_names() -> None:
    names = {d: set(load_queries(d)) - DIALECT_ONLY.get(d, frozenset()) for d in DIALECTS}
    assert names["sqlite"] == names["postgres"]
    assert len(names["sqlite"]) > 40


@pytest.mark.parametrize("dialect", DIALECTS)
def test_queries_use_the_same_parameters_in_every_dialect(dialect: str) -> None:
    sqlite = load_queries("sqlite")
    postgres = load_queries("postgres")
    for name, sql in sqlite.items():
        if name in postgres:
            assert set(re.findall(r"(?<![:\w]):(\w+)", sql)) == set(
                re.findall(r"%\((\w+)\)s", postgres[name])
            ), name


def test_parse_rejects_a_name_defined_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_a_fragment_is_written_into_the_queries_after_it() -> None:
    text = (
        "-- fragment: floor\n-- why it is what it is\nMIN(a, b)\n\n"
        "-- name: q\nSELECT {{floor}} + {{floor}};\n"
    )
    assert parse_queries(text) == {"q": "SELECT MIN(a, b) + MIN(a, b)"}
    with pytest.raises(ValueError, match="before it is defined"):
        parse_queries("-- name: q\nSELECT {{floor}};\n-- fragment: floor\n1\n")
    # a file read later uses the fragments of the files before it, and adds its own
    known = {"floor": "1"}
    assert parse_queries("-- fragment: top\n9\n-- name: q\nSELECT {{floor}};\n", known) == {
        "q": "SELECT 1"
    }
    assert known == {"floor": "1", "top": "9"}


def test_queries_are_compacted_without_touching_string_literals() -> None:
    text = (
        "-- name: q\nSELECT a,   -- the first\n    'x  -- y'\n  FROM t\n"
        "  WHERE s = 'it''s  --'  -- why\n;\n"
    )
    assert parse_queries(text) == {"q": "SELECT a, 'x  -- y' FROM t WHERE s = 'it''s  --'"}
    # a quote in a trailing comment starts no literal
    text = "-- name: q\nSELECT a  -- the tenant's\n  , 'b  c'  -- it's\nFROM t;\n"
    assert parse_queries(text) == {"q": "SELECT a , 'b  c' FROM t"}
    with pytest.raises(ValueError, match="dollar-quoted"):
        parse_queries("-- name: q\nSELECT $$a  b$$;\n")
    with pytest.raises(ValueError, match="dollar-quoted"):
        parse_queries("-- name: q\nSELECT E'a\\n';\n")
    plain = parse_queries("-- name: q\nSELECT 'e',  'E' FROM t;\n")
    assert plain == {"q": "SELECT 'e', 'E' FROM t"}


def test_every_postgres_statement_fits_psycopgs_parse_cache() -> None:
    """psycopg parses the placeholders of a statement of at most this many characters once;
    a longer one is parsed again on every call (~150 us of client CPU for the longest)."""
    limit = psycopg_queries.MAX_CACHED_STATEMENT_LENGTH
    assert {n: len(q) for n, q in load_queries("postgres").items() if len(q) > limit} == {}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_no_query_is_left_with_a_fragment_to_fill(dialect: str) -> None:
    assert not [name for name, sql in load_queries(dialect).items() if "{{" in sql]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_migrations_are_numbered_once_and_split_cleanly(dialect: str) -> None:
    migrations = load_migrations(dialect)
    versions = [v for v, _, _ in migrations]
    assert versions == sorted(set(versions)) and versions[0] == 1
    for _, _, sql in migrations:
        assert split_statements(sql)


def test_both_dialects_have_the_same_migrations() -> None:
    assert [n for _, n, _ in load_migrations("sqlite")] == [
        n for _, n, _ in load_migrations("postgres")
    ]
