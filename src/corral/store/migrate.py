"""Helpers for applying the numbered migration files (each backend runs them under its own lock)."""

from __future__ import annotations

import sqlite3


def split_statements(sql: str) -> list[str]:
    """Split a migration file into complete statements (no statement in corral's migrations
    contains a semicolon inside a string or a trigger body)."""
    statements: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--") and not pending.strip():
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:80]!r}")
    return statements
