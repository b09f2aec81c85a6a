"""Write the schema that the migrations build, per dialect, to src/corral/store/schema/.

Run after adding a migration: ``.venv/bin/python scripts/dump_schema.py [POSTGRES_DSN]``. The
files are the declared schema: tests/contract/test_schema.py fails until a database built from
every migration equals a database built from them, so a migration's effect shows up, whole,
in the review diff of these files.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

from corral.store import create_store

OUT = Path(__file__).resolve().parent.parent / "src" / "corral" / "store" / "schema"
HEADER = "-- The schema the migrations build ({dialect}); written by scripts/dump_schema.py.\n"
SCRATCH = "corral_schema_dump"


async def migrate(url: str) -> None:
    store = create_store(url)
    await store.open()
    await store.close()


def postgres(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCRATCH} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCRATCH}")
    try:
        asyncio.run(migrate(f"{dsn}?options=-csearch_path%3D{SCRATCH}"))
        dump = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "--schema", SCRATCH, dsn],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCRATCH} CASCADE")
    statements = []
    for statement in dump.replace(f"{SCRATCH}.", "").split(";\n"):
        lines = [
            line
            for line in statement.splitlines()
            if line.strip() and not line.startswith(("--", "SET ", "SELECT pg_catalog", "\\"))
        ]
        text = "\n".join(lines).strip()
        if text and not text.startswith("CREATE SCHEMA") and "corral_schema_migrations" not in text:
            statements.append(text + ";")
    return HEADER.format(dialect="PostgreSQL") + "\n\n".join(statements) + "\n"


def sqlite() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "schema.db"
        asyncio.run(migrate(f"sqlite:///{path}"))
        conn = sqlite3.connect(path)
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'corral_schema_migrations%' ORDER BY type DESC, name"
        ).fetchall()
        conn.close()
    statements = [re.sub(r"[ \t]+\n", "\n", sql).strip() + ";" for (sql,) in rows]
    return HEADER.format(dialect="SQLite") + "\n\n".join(statements) + "\n"


def main(dsn: str) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / "postgres.sql").write_text(postgres(dsn))
    (OUT / "sqlite.sql").write_text(sqlite())
    print(f"wrote {OUT}/postgres.sql and sqlite.sql")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test")
