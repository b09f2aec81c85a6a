"""Migrations against the declared schema (src/corral/store/schema/<dialect>.sql).

A database built by applying every migration must equal one built from the declared schema:
the same tables and columns (types, nullability, defaults), indexes (with their predicates),
constraints and storage options. A migration that changes the schema without the declared
file (``scripts/dump_schema.py`` rewrites it) fails here, so every schema change is reviewed
whole. The migrations table itself is the migrator's, not the schema's.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources
from typing import Any

import psycopg

from corral.store import create_store
from corral.store.migrate import split_statements

Catalog = dict[str, list[tuple[Any, ...]]]


def declared(dialect: str) -> str:
    return resources.files("corral.store").joinpath("schema", f"{dialect}.sql").read_text()


def _squash(sql: str | None) -> str:
    return re.sub(r"\s+", " ", sql or "").strip()


def sqlite_catalog(path: str) -> Catalog:
    conn = sqlite3.connect(path)
    try:
        objects = [
            (kind, name, table, _squash(sql))
            for kind, name, table, sql in conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master "
                "WHERE tbl_name <> 'corral_schema_migrations' ORDER BY type, name"
            )
        ]
        columns = [
            (name, *column)
            for kind, name, _, _ in objects
            if kind == "table"
            for column in conn.execute(f"PRAGMA table_info({name})")
        ]
    finally:
        conn.close()
    return {"objects": objects, "columns": columns}


def postgres_catalog(dsn: str) -> Catalog:
    with psycopg.connect(dsn) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
        queries = {
            "columns": """SELECT table_name, column_name, data_type, is_nullable, column_default
                FROM information_schema.columns WHERE table_schema = %(s)s
                  AND table_name <> 'corral_schema_migrations'
                ORDER BY table_name, ordinal_position""",
            "indexes": """SELECT tablename, indexname, replace(indexdef, %(s)s || '.', '')
                FROM pg_indexes WHERE schemaname = %(s)s
                  AND tablename <> 'corral_schema_migrations' ORDER BY indexname""",
            "constraints": """SELECT c.conrelid::regclass::text, c.conname,
                    pg_get_constraintdef(c.oid)
                FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
                WHERE n.nspname = %(s)s
                  AND c.conrelid::regclass::text <> 'corral_schema_migrations'
                ORDER BY 1, 2""",
            "storage": """SELECT c.relname, c.relkind, c.reloptions
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %(s)s AND c.relname NOT LIKE 'corral_schema_migrations%%'
                ORDER BY c.relname""",
        }
        return {k: conn.execute(q, {"s": schema}).fetchall() for k, q in queries.items()}


def build_declared(url: str) -> None:
    statements = split_statements(declared("sqlite" if url.startswith("sqlite") else "postgres"))
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            for statement in statements:
                conn.execute(statement)
            conn.commit()
        finally:
            conn.close()
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)


def catalog(url: str) -> Catalog:
    if url.startswith("sqlite"):
        return sqlite_catalog(url.removeprefix("sqlite:///"))
    return postgres_catalog(url)


async def test_migrations_build_the_declared_schema(db_url: str, second_db_url: str) -> None:
    store = create_store(db_url)
    await store.open()
    await store.close()
    build_declared(second_db_url)
    migrated, expected = catalog(db_url), catalog(second_db_url)
    assert migrated["columns"], "no tables found: the comparison would prove nothing"
    for part in expected:
        assert migrated[part] == expected[part], part
