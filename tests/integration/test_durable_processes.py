"""Durable execution with real worker processes: replay across SIGKILLs, budgets charged from
many processes at once, a durable timer across a restart. Both backends."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import psycopg
import pytest

from corral import Corral
from corral.models import RunStatus
from corral.store import parse_database_url
from tests.support.processes import WorkerProcess

pytestmark = pytest.mark.timeout(300)
APP = "tests.integration.durable_workload:app"


def effects_table(db_url: str) -> None:
    parsed = parse_database_url(db_url)
    sql = "CREATE TABLE test_effects (run_id TEXT NOT NULL, step INTEGER NOT NULL)"
    if parsed.dialect == "sqlite":
        import sqlite3

        with sqlite3.connect(parsed.target) as conn:
            conn.execute(sql)
    else:
        with psycopg.connect(parsed.target, autocommit=True) as conn:
            conn.execute(sql)


def effect_counts(db_url: str) -> dict[tuple[str, int], int]:
    parsed = parse_database_url(db_url)
    sql = "SELECT run_id, step, COUNT(*) FROM test_effects GROUP BY run_id, step"
    if parsed.dialect == "sqlite":
        import sqlite3

        with sqlite3.connect(parsed.target) as conn:
            rows = conn.execute(sql).fetchall()
    else:
        with psycopg.connect(parsed.target) as conn:
            rows = conn.execute(sql).fetchall()
    return {(r[0], int(r[1])): int(r[2]) for r in rows}


async def test_replay_across_twenty_sigkills_runs_each_step_once(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    async with Corral(db_url) as app:
        effects_table(db_url)
        ids = await app.submit_many([{"agent": "fifty_steps", "max_attempts": 100}] * 12)
        worker = WorkerProcess(db_url, log, app=APP, ttl=1.0, concurrency=4, poll_interval=0.05)
        rng = random.Random(3)
        kills = 0
        try:
            for _ in range(20):
                # kill only once this worker has made progress, at a random moment after
                before = sum(effect_counts(db_url).values())
                deadline = time.monotonic() + 30
                while sum(effect_counts(db_url).values()) < min(before + 8, 12 * 50):
                    assert time.monotonic() < deadline, "worker made no progress"
                    await asyncio.sleep(0.02)
                if before + 8 > 12 * 50:
                    break
                await asyncio.sleep(rng.uniform(0, 0.1))
                kills += 1
                worker.signal(signal.SIGKILL)
                worker.wait()
                worker = WorkerProcess(
                    db_url, log, app=APP, ttl=1.0, concurrency=4, poll_interval=0.05
                )
            runs = [await app.wait(i, timeout=120) for i in ids]
        finally:
            worker.stop()
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * len(ids)
    assert all(r.result == 50 for r in runs)
    counts = effect_counts(db_url)
    assert counts == {(r, s): 1 for r in ids for s in range(50)}
    # the kills did land mid-run: runs were redelivered and replayed
    assert kills >= 15
    assert sum(r.lease_epoch > 1 for r in runs) >= 4


async def test_concurrent_charges_from_four_processes_never_overspend(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    async with Corral(db_url) as app:
        root = await app.submit(
            "fan_out_spenders", {"children": 100, "amount": 3}, budget=150, max_attempts=3
        )
        workers = [
            WorkerProcess(db_url, log, app=APP, ttl=5.0, concurrency=8, poll_interval=0.05)
            for _ in range(4)
        ]
        try:
            run = await app.wait(root, timeout=120)
            children = await app.list_runs(agent="spender", limit=1000)
            journals = [await app.journal(c.id) for c in children]
        finally:
            for w in workers:
                w.stop()
    assert run.status == RunStatus.SUCCEEDED, run.error
    charged = [c for c in children if c.result == 3]
    refused = [c for c in children if c.result == 0]
    assert len(children) == 100 and len(charged) + len(refused) == 100
    assert run.spent == run.result == 3 * len(charged) <= 150
    assert len(charged) == 50  # the budget is used up exactly, not under-used
    for child, journal in zip(children, journals, strict=True):
        charges = [e for e in journal if e.kind == "charge"]
        assert len(charges) == 1
        assert ("error" in charges[0].data) == (child.result == 0)
        if child.result == 0:
            assert charges[0].data["error"]["type"] == "BudgetExceeded"
    assert len({c.lease_owner for c in children} | {None}) >= 1


async def test_durable_sleep_survives_a_restart_and_fires_once(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    async with Corral(db_url) as app:
        run_id = await app.submit("sleeper", 2.0)
        first = WorkerProcess(db_url, log, app=APP, ttl=1.0, poll_interval=0.05)
        try:
            deadline = time.monotonic() + 30
            while (await app.get(run_id)).status != RunStatus.WAITING:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            first.signal(signal.SIGKILL)
            first.wait()
        assert not log.exists()  # asleep, nothing has woken yet
        second = WorkerProcess(db_url, log, app=APP, ttl=1.0, poll_interval=0.05)
        try:
            run = await app.wait(run_id, timeout=30)
        finally:
            second.stop()
    assert run.status == RunStatus.SUCCEEDED and run.result == "rested"
    assert log.read_text().splitlines() == [f"woke {run_id}"]
    assert run.finished_at is not None and run.finished_at - run.created_at >= 2.0
