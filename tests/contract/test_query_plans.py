"""The lease path stays on its indexes right after a burst into an empty table, before any
ANALYZE has run (a planner-statistics cliff is a known way for a queue to get 8x slower), and
reads a handful of the 20,000 queued runs, not all of them: an index scan over every queued
run is as much a cliff as a sequential scan (the candidate query once hashed every queued run
on every lease). The statements the hot paths run on generic plans (``use_generic_plans``:
lease, submit, ack) are checked on their generic plans too: built without the parameters'
values, a join the planner cannot size once turned the lease's update into a scan of every run.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from corral.clock import Clock, FakeClock, system_clock
from corral.config import StoreConfig
from corral.models import RunSpec
from corral.store import Store, create_store
from corral.store.queries import load_queries
from corral.store.sql_lease import _union_of_picks
from corral.store.sql_queue import _list_runs_sql
from tests.support.postgres import fresh_schema

HOT = {
    "candidate_tenants": {"limit": 32, "light_below": 2_000_000_000},
    "lease_fast": {
        "slots": 32,
        "owner": "w",
        "expires_at": 1e12,
        "min_cost": 0.01,
        "light_below": 2_000_000_000,
    },
    "take_tenant_runs": {"tenant": "t7", "n": 32, "owner": "w", "expires_at": 1e12},
    "select_expired": {"limit": 100},
    "due_timers": {"limit": 100},
    "tenant_stats": {},
}
#: statements run with plan_cache_mode = force_generic_plan: their generic plan must be as
#: good as a custom one
GENERIC = {
    "lease_fast": HOT["lease_fast"],
    "ack_runs_batch": {"epochs": [1, 1], "results": ["null", "null"]},
    "ack_fast": {"epochs": [1, 1], "results": ["null", "null"]},
    "ack_lease_fast": {
        "epochs": [1, 1],
        "results": ["null", "null"],
        "slots": 32,
        "owner": "w",
        "expires_at": 1e12,
        "min_cost": 0.01,
    },
    "reserve_queued": {"tenant": "t7", "n": 1},
    "submit_one": {
        "id": "probe-run",
        "tenant": "t7",
        "agent": "echo",
        "input": "null",
        "priority": 0,
        "sort_key": 0.0,
        "available_at": 0.0,
        "max_attempts": 3,
        "budget": 1.0,
        "timeout": 60.0,
        "start_by": 1e12,
        "min_cost": 0.01,
        "offer_lifetime": 5.0,
    },
}
PARAM = re.compile(r"%\((\w+)\)s")  # psycopg's named placeholders


def _pg_type(value: Any) -> str:
    if isinstance(value, list):
        return _pg_type(value[0]) + "[]"
    return {str: "text", float: "float8", int: "int8"}[type(value)]


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def _explain(
    conn: psycopg.Connection[Any], query: str, params: dict[str, Any], generic: bool
) -> Any:
    """EXPLAIN ANALYZE, rolled back. ``generic``: of a prepared statement's generic plan."""
    with conn.transaction(force_rollback=True):  # some of the statements write
        if not generic:
            return conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", params).fetchone()
        names: list[str] = []

        def placeholder(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        positional = PARAM.sub(placeholder, query)
        types = ", ".join(_pg_type(params[n]) for n in names)
        conn.execute(f"PREPARE plan_probe ({types}) AS {positional}")
        values = sql.SQL(", ").join(sql.Literal(params[n]) for n in names)
        probe = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE plan_probe ({})").format(values)
        try:
            return conn.execute(probe).fetchone()
        finally:
            conn.execute("DEALLOCATE plan_probe")  # prepared statements outlive a rollback


@contextlib.asynccontextmanager
async def _fresh_store(
    pg_dsn: str, clock: Clock = system_clock
) -> AsyncIterator[tuple[str, Store]]:
    """An open store in a new, empty schema (dropped afterwards), and that schema's DSN."""
    with fresh_schema(pg_dsn) as dsn:
        store = create_store(dsn, StoreConfig(), clock)
        await store.open()
        try:
            yield dsn, store
        finally:
            await store.close()


def _plan(
    conn: psycopg.Connection[Any], query: str, args: dict[str, Any], generic: bool
) -> list[dict[str, Any]]:
    """The nodes of the statement's analyzed plan (its row locks left out)."""
    query = re.sub(r"FOR UPDATE( OF \w+)?( SKIP LOCKED)?", "", query)
    row = _explain(conn, query, args, generic)
    assert row is not None
    plan = json.loads(row[0])[0]["Plan"] if isinstance(row[0], str) else row[0][0]["Plan"]
    return _plan_nodes(plan)


def _runs_read(
    conn: psycopg.Connection[Any], query: str, args: dict[str, Any], generic: bool
) -> tuple[set[tuple[str, str | None]], int]:
    """The scans of the statement's plan, and how many index entries of corral_runs it read."""
    nodes = _plan(conn, query, args, generic)
    scans = {(n["Node Type"], n.get("Relation Name")) for n in nodes if "Scan" in n["Node Type"]}
    read = sum(
        n["Actual Rows"] * n["Actual Loops"]
        for n in nodes
        if "Index" in n["Node Type"] and n.get("Index Name", "").startswith("corral_runs")
    )
    return scans, read


@pytest.mark.parametrize(
    ("tenants", "chunks", "late_tenants", "analyze"),
    [(20, 4, 0, False), (1, 4, 0, False), (1, 4, 100, True)],
)
async def test_lease_queries_use_indexes_right_after_a_burst(
    pg_dsn: str, tenants: int, chunks: int, late_tenants: int, analyze: bool
) -> None:
    """Also with statistics that mislead: one tenant's burst, then one run each of 100 more
    tenants at the end of the table, analyzed from a sample that misses the small tenants (at
    200,000 runs, ANALYZE's 30,000-row sample often does: it then guesses thousands of runs
    for each tenant). A planner that assumes the runs of every tenant
    spread evenly expects a sequential scan to meet any tenant's queued run within a few rows
    and stops at the first (LIMIT 1); here it reads the whole burst once per small tenant, on
    every lease (seconds per lease at 200,000 runs)."""
    clock = FakeClock()
    async with _fresh_store(pg_dsn, clock) as (dsn, store):
        for chunk in range(chunks):  # 5,000 runs each
            await store.submit(
                [
                    RunSpec("echo", tenant=f"t{7 + i % tenants}")
                    for i in range(5000 * chunk, 5000 * (chunk + 1))
                ]
            )
        if late_tenants:
            late = [RunSpec("echo", tenant=f"late{i}") for i in range(late_tenants)]
            await store.submit(late)
        queries = load_queries("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            if analyze:
                # what a sample that met only the burst's tenant concludes (seen at 200,000
                # runs): few tenants, each with a large share of the table
                conn.execute("ALTER TABLE corral_runs ALTER COLUMN tenant SET (n_distinct = 2)")
                conn.execute("ANALYZE corral_runs")
                conn.execute("ANALYZE corral_tenants")
            else:
                analyzed = conn.execute(
                    "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
                    "WHERE relname = 'corral_runs' AND schemaname = current_schema()"
                ).fetchone()
                assert analyzed == (None, None)
            ids = [r[0] for r in conn.execute("SELECT id FROM corral_runs LIMIT 2")]
            cases = [(name, params, False) for name, params in HOT.items()]
            cases += [(name, params, True) for name, params in GENERIC.items()]
            for name, params, generic in cases:
                args = {"now": clock.now, "ids": ids, **params}
                scans, read = _runs_read(conn, queries[name], args, generic)
                assert ("Seq Scan", "corral_runs") not in scans, (name, generic, scans)
                # tenant_stats too: the oldest runnable run is one entry of a tenant's
                # queued-age index, not a read of all its queued runs
                assert read <= 200, (name, generic, read)


#: the statements that rank candidate tenants, with parameters
RANKING = ("candidate_tenants", "lease_fast", "ack_lease_fast")


@pytest.mark.parametrize("analyzed", [False, True])
async def test_leases_read_a_few_of_thousands_of_tied_tenants(pg_dsn: str, analyzed: bool) -> None:
    """2,000 tenants with one run each, all on the same vtime (what a burst of new tenants
    gives: each is lifted to the same floor). The lease ranks tenants by vtime, then the
    rest of its order; on an index of vtime alone the planner read every backlogged tenant,
    probed each for a ready run and sorted them all, on every lease (35 ms at 10,000)."""
    clock = FakeClock()
    async with _fresh_store(pg_dsn, clock) as (dsn, store):
        await store.submit([RunSpec("echo", tenant=f"t{i:04d}") for i in range(2000)])
        queries = load_queries("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            if analyzed:
                conn.execute("ANALYZE corral_tenants")
                conn.execute("ANALYZE corral_runs")
            ids = [r[0] for r in conn.execute("SELECT id FROM corral_runs LIMIT 2")]
            for name in RANKING:
                params = {**GENERIC.get(name, HOT.get(name, {})), "limit": 32}
                args = {"now": clock.now, "ids": ids, "light_below": 2_000_000_000, **params}
                for generic in (False, True):
                    nodes = _plan(conn, queries[name], args, generic)
                    tenants = sum(
                        (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"]
                        for n in nodes
                        if n.get("Relation Name") == "corral_tenants"
                    )
                    assert tenants <= 200, (name, generic, tenants)


async def test_sqlite_lease_ranks_tenants_on_the_order_index(tmp_path: Path) -> None:
    """SQLite's candidate query walks the lease-order index and stops at its limit: no sort
    of the tenants tied on vtime (the SQLite side of the test above)."""
    store = create_store(f"sqlite:///{tmp_path / 'plans.db'}", StoreConfig())
    await store.open()
    try:
        await store.submit([RunSpec("echo", tenant=f"t{i:04d}") for i in range(2000)])
    finally:
        await store.close()
    query = load_queries("sqlite")["candidate_tenants"]
    with sqlite3.connect(tmp_path / "plans.db") as conn:
        for analyzed in (False, True):
            if analyzed:
                conn.execute("ANALYZE")
            args = {"now": 1e12, "limit": 32, "light_below": 2_000_000_000}
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", args)]
            assert any("INDEX corral_tenants_lease_order" in step for step in plan), plan
            assert not any("TEMP B-TREE" in step for step in plan), plan  # no sort


@pytest.mark.parametrize("analyzed", [False, True])
async def test_acks_look_runs_up_by_key_while_thousands_are_running(
    pg_dsn: str, analyzed: bool
) -> None:
    """An ack finds its runs through the primary key, never through the index of every running
    run, whatever the statistics say (analyzed while nothing ran, or never analyzed)."""
    clock = FakeClock()
    async with _fresh_store(pg_dsn, clock) as (dsn, store):
        await store.submit([RunSpec("echo", tenant=f"t{i % 4}") for i in range(5000)])
        if analyzed:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ANALYZE corral_runs")
        leases = []
        for _ in range(40):
            leases += await store.lease("w", 300.0, 100)
        assert len(leases) == 4000
        queries = load_queries("postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in ("ack_fast", "ack_runs_batch", "ack_lease_fast"):
                batch = leases[:32]
                args = {
                    "now": clock.now,
                    "ids": [lease.run_id for lease in batch],
                    "epochs": [lease.epoch for lease in batch],
                    "results": ["null"] * len(batch),
                    **GENERIC["ack_lease_fast"],
                }
                scans, read = _runs_read(conn, queries[name], args, generic=True)
                assert ("Seq Scan", "corral_runs") not in scans, (name, scans)
                # one entry per run acked (64: an index may hold a dead version too); the
                # lease in ack_lease_fast also reads the 32 runs it takes, and one entry
                # per tenant for its candidates
                bound = 64 if name != "ack_lease_fast" else 64 + 2 * 32 + 8
                assert read <= bound, (name, analyzed, read, scans)


@pytest.mark.parametrize("generic", [False, True])
async def test_a_tenants_listing_walks_its_own_entries_behind_a_burst(
    pg_dsn: str, generic: bool
) -> None:
    """A small tenant's newest-first page (what its API key lists) reads about a page of index
    entries, not the burst another tenant submitted after it."""
    async with _fresh_store(pg_dsn) as (dsn, store):
        await store.submit([RunSpec("echo", tenant="small") for _ in range(60)])
        for _ in range(4):
            await store.submit([RunSpec("echo", tenant="big") for _ in range(5000)])
        template = load_queries("postgres")["list_runs"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            newest = conn.execute(
                "SELECT max(id) FROM corral_runs WHERE tenant = 'small'"
            ).fetchone()
            assert newest is not None
            for filters, args in (
                (("tenant",), {"tenant": "small"}),
                (("tenant", "status"), {"tenant": "small", "status": "queued"}),
                (("tenant", "before"), {"tenant": "small", "before": newest[0]}),
            ):
                query = _list_runs_sql(template, "postgres", filters)
                scans, read = _runs_read(conn, query, {**args, "limit": 50}, generic)
                assert ("Seq Scan", "corral_runs") not in scans, (filters, scans)
                assert read <= 60, (filters, generic, read, scans)


async def test_sqlite_listing_of_a_tenant_uses_its_index(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'plans.db'}", StoreConfig())
    await store.open()
    await store.close()
    template = load_queries("sqlite")["list_runs"]
    with sqlite3.connect(tmp_path / "plans.db") as conn:
        for filters in (("tenant",), ("tenant", "status", "before"), ("tenant", "agent")):
            query = _list_runs_sql(template, "sqlite", filters)
            args = {"tenant": "t", "status": "queued", "agent": "a", "before": "z", "limit": 50}
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", args)]
            assert any("USING INDEX corral_runs_listing" in step for step in plan), plan
            assert not any("TEMP B-TREE" in step for step in plan), plan  # no sort


async def test_fifo_pick_reads_the_heads_of_tenant_queues_not_their_backlogs(
    pg_dsn: str,
) -> None:
    """fairness="fifo" keeps no index of every queued run: its pick merges the tenants' own
    queues, reading one entry per candidate tenant and at most :n of each of the :n tenants
    whose first runs are oldest, whatever their backlogs."""
    clock = FakeClock()
    async with _fresh_store(pg_dsn, clock) as (dsn, store):
        await store.submit([RunSpec("echo", tenant=f"t{i % 20}") for i in range(20_000)])
        with psycopg.connect(dsn, autocommit=True) as conn:
            args = {"now": clock.now, "n": 8, "full": "[]"}
            query = load_queries("postgres")["pick_oldest_runs"]
            scans, read = _runs_read(conn, query, args, False)
    assert ("Seq Scan", "corral_runs") not in scans, scans
    assert read <= 20 + 8 * 8, read


async def test_sqlite_fifo_pick_work_does_not_grow_with_the_backlog(tmp_path: Path) -> None:
    """The SQLite side of the test above, counted in virtual-machine steps: ten times the
    backlog per tenant must not mean ten times the work of a pick."""
    queries = load_queries("sqlite")

    async def steps(per_tenant: int) -> int:
        path = tmp_path / f"fifo-{per_tenant}.db"
        store = create_store(f"sqlite:///{path}", StoreConfig(fairness="fifo"), FakeClock())
        await store.open()
        try:
            await store.submit(
                [RunSpec("echo", tenant=f"t{i % 20}") for i in range(20 * per_tenant)]
            )
        finally:
            await store.close()
        counted = 0

        def count() -> int:
            nonlocal counted
            counted += 1
            return 0

        with sqlite3.connect(path) as conn:
            conn.set_progress_handler(count, 10)
            args: dict[str, Any] = {"now": 1e12, "n": 8, "full": "[]"}
            heads = [row[0] for row in conn.execute(queries["oldest_heads"], args)]
            assert len(heads) == 8
            args |= {f"tenant_{i}": tenant for i, tenant in enumerate(heads)}
            merge = _union_of_picks(
                queries["merge_oldest_picks"], queries["tenant_oldest_pick"], len(heads)
            )
            assert len(conn.execute(merge, args).fetchall()) == 8
        return counted

    small, large = await steps(200), await steps(2000)
    assert large < 1.5 * small, (small, large)


@pytest.mark.parametrize("generic", [False, True])
async def test_the_look_for_overdue_runs_reads_only_runs_with_a_limit(
    pg_dsn: str, generic: bool
) -> None:
    """Every worker looks every few seconds for runs past their start_within: right after a
    burst of runs without one, the look reads the few runs that have one, on its index."""
    async with _fresh_store(pg_dsn) as (dsn, store):
        await store.submit([RunSpec("echo", start_within=1) for _ in range(5)])
        for _ in range(4):
            await store.submit([RunSpec("echo", tenant="big") for _ in range(5000)])
        query = load_queries("postgres")["overdue_runs"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            scans, read = _runs_read(conn, query, {"now": 1e12, "limit": 500}, generic)
        assert ("Seq Scan", "corral_runs") not in scans, scans
        assert read <= 5, (read, scans)


async def test_sqlite_look_for_overdue_runs_uses_its_index(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path / 'plans.db'}", StoreConfig())
    await store.open()
    await store.close()
    query = load_queries("sqlite")["overdue_runs"]
    with sqlite3.connect(tmp_path / "plans.db") as conn:
        args = {"now": 1e12, "limit": 500}
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", args)]
    assert any("USING INDEX corral_runs_start_by" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
