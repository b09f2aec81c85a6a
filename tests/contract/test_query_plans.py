"""The lease path stays on its indexes right after a burst into an empty table, before any
ANALYZE has run (a planner-statistics cliff is a known way for a queue to get 8x slower), and
reads a handful of the 20,000 queued runs, not all of them: an index scan over every queued
run is as much a cliff as a sequential scan (the candidate query once hashed every queued run
on every lease)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.models import RunSpec
from corral.store import create_store
from corral.store.queries import load_queries
from tests.support.postgres import fresh_schema

HOT = {
    "candidate_tenants": {"limit": 32},
    "lease_fast": {"slots": 32, "owner": "w", "expires_at": 1e12, "min_cost": 0.01},
    "take_tenant_runs": {"tenant": "t7", "n": 32, "owner": "w", "expires_at": 1e12},
    "select_expired": {"limit": 100},
    "due_timers": {"limit": 100},
    "tenant_stats": {},
}


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


async def test_lease_queries_use_indexes_right_after_a_burst(pg_dsn: str) -> None:
    clock = FakeClock()
    with fresh_schema(pg_dsn) as dsn:
        store = create_store(dsn, StoreConfig(), clock)
        await store.open()
        try:
            for chunk in range(4):  # 20,000 runs over 20 tenants, nothing analyzed
                await store.submit(
                    [
                        RunSpec("echo", tenant=f"t{i % 20}")
                        for i in range(5000 * chunk, 5000 * (chunk + 1))
                    ]
                )
            queries = load_queries("postgres")
            with psycopg.connect(dsn, autocommit=True) as conn:
                analyzed = conn.execute(
                    "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
                    "WHERE relname = 'corral_runs'"
                ).fetchone()
                assert analyzed == (None, None)
                for name, params in HOT.items():
                    sql = (
                        queries[name]
                        .replace("FOR UPDATE SKIP LOCKED", "")
                        .replace("FOR UPDATE", "")
                    )
                    with conn.transaction(force_rollback=True):  # lease_fast writes
                        row = conn.execute(
                            f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", {"now": clock.now, **params}
                        ).fetchone()
                    assert row is not None
                    nodes = _plan_nodes(
                        json.loads(row[0])[0]["Plan"]
                        if isinstance(row[0], str)
                        else row[0][0]["Plan"]
                    )
                    scans = {
                        (n["Node Type"], n.get("Relation Name"))
                        for n in nodes
                        if "Scan" in n["Node Type"]
                    }
                    assert ("Seq Scan", "corral_runs") not in scans, (name, scans)
                    read = sum(
                        n["Actual Rows"] * n["Actual Loops"]
                        for n in nodes
                        if "Index Scan" in n["Node Type"]
                        and n.get("Index Name", "").startswith("corral_runs")
                    )
                    # stats report the oldest runnable run per tenant (MIN(available_at)):
                    # that reads a tenant's queued runs, on demand rather than per lease
                    assert name == "tenant_stats" or read <= 200, (name, read)
        finally:
            await store.close()
