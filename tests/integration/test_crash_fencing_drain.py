"""Invariants 1 and 3 with real worker processes and real signals, on both backends."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from corral import Corral
from corral.models import Run, RunStatus
from tests.support.processes import ROOT, WorkerProcess

pytestmark = pytest.mark.timeout(300)


def completions(log: Path) -> list[tuple[str, int, int]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        _, run_id, epoch, pid = line.split()
        out.append((run_id, int(epoch), int(pid)))
    return out


async def wait_all_done(app: Corral, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = await app.stats()
        if stats.queued == 0 and stats.in_flight == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"runs not done in {timeout}s: {await app.stats()}")


async def test_sigkilled_workers_lose_nothing(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "completions.log"
    rng = random.Random(7)
    async with Corral(db_url) as app:
        ids = await app.submit_many(
            [
                {
                    "agent": "work",
                    "input": {"i": i, "sleep": rng.uniform(0, 0.02)},
                    "max_attempts": 20,
                }
                for i in range(2000)
            ]
        )
        workers = [WorkerProcess(db_url, log, ttl=2.0) for _ in range(4)]
        kills = 0
        try:
            for _ in range(3):
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                for victim in rng.sample(range(len(workers)), rng.choice([1, 2])):
                    workers[victim].signal(signal.SIGKILL)
                    workers[victim].wait()
                    kills += 1
                    workers[victim] = WorkerProcess(db_url, log, ttl=2.0)
            await wait_all_done(app, ids, timeout=120)
        finally:
            for w in workers:
                w.stop()
        runs = {r: await app.get(r) for r in ids}
    assert kills >= 3
    assert_acked_once(runs, log)


def assert_acked_once(runs: dict[str, Run], log: Path) -> None:
    """Every run succeeded; the acked execution completed exactly once, nothing after it."""
    assert all(run.status == RunStatus.SUCCEEDED for run in runs.values()), Counter(
        run.status for run in runs.values()
    )
    by_run: dict[str, list[int]] = defaultdict(list)
    for run_id, epoch, _pid in completions(log):
        by_run[run_id].append(epoch)
    for run_id, run in runs.items():
        final = run.lease_epoch
        assert by_run[run_id].count(final) == 1, (run_id, by_run[run_id], final)
        assert max(by_run[run_id]) == final, (run_id, by_run[run_id], final)
        assert run.result["epoch"] == final


async def test_runs_submitted_one_by_one_to_waiting_workers_survive_sigkills(
    db_url: str, tmp_path: Path
) -> None:
    """Runs arrive one at a time while workers wait, so on PostgreSQL most are handed to a
    waiting worker at submit (docs/architecture.md, "Handoff"), some to a worker about to be
    killed: each comes back after its lease TTL, none is lost or acked twice."""
    log = tmp_path / "completions.log"
    rng = random.Random(11)
    async with Corral(db_url) as app:
        await app.set_tenant("default")  # a tenant's first run is never handed
        workers = [WorkerProcess(db_url, log, ttl=2.0, concurrency=4) for _ in range(3)]
        ids: list[str] = []
        kills = 0
        try:
            await asyncio.sleep(1.0)  # the workers start and wait
            for i in range(600):
                ids.append(
                    await app.submit(
                        "work", {"i": i, "sleep": rng.uniform(0, 0.01)}, max_attempts=20
                    )
                )
                await asyncio.sleep(rng.uniform(0, 0.004))
                if i % 150 == 149:
                    victim = rng.randrange(len(workers))
                    workers[victim].signal(signal.SIGKILL)
                    workers[victim].wait()
                    kills += 1
                    workers[victim] = WorkerProcess(db_url, log, ttl=2.0, concurrency=4)
            await wait_all_done(app, ids, timeout=120)
        finally:
            for w in workers:
                w.stop()
        runs = {r: await app.get(r) for r in ids}
    assert kills == 4
    assert_acked_once(runs, log)
    if not db_url.startswith("sqlite"):
        # the premise: most went by handoff (started in the transaction that accepted them)
        handed = sum(run.started_at == run.created_at for run in runs.values())
        assert handed > len(runs) // 2, handed


async def test_paused_worker_cannot_write_after_its_lease_expired(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "completions.log"
    async with Corral(db_url) as app:
        run_id = await app.submit("work", {"i": 0, "sleep": 2.5, "emit": True})
        first = WorkerProcess(db_url, log, ttl=1.0, concurrency=1, poll_interval=0.05)
        try:
            deadline = time.monotonic() + 30
            while (await app.get(run_id)).status != RunStatus.RUNNING:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            first.signal(signal.SIGSTOP)  # a GC pause, a frozen VM: the lease runs out
            second = WorkerProcess(db_url, log, ttl=1.0, concurrency=1, poll_interval=0.05)
            try:
                while (await app.get(run_id)).lease_epoch < 2:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                first.signal(signal.SIGCONT)  # resumes mid-agent, finishes, tries to ack
                run = await app.wait(run_id, timeout=30)
                await asyncio.sleep(1.0)  # let the resumed worker try its writes
                run = await app.get(run_id)
                journal = await app.journal(run_id)
            finally:
                second.stop()
        finally:
            first.signal(signal.SIGCONT)
            first.stop()
    assert run.status == RunStatus.SUCCEEDED
    assert run.lease_epoch == 2 and run.result["pid"] == second.pid
    # On resume the zombie either learns from its heartbeat that the lease is gone and stops,
    # or gets as far as a write and is refused: no write of epoch 1 is in the store.
    events = [e for e in journal if e.kind == "event"]
    assert [(e.epoch, e.data["pid"]) for e in events] == [(2, second.pid)]
    assert all(e.epoch != 1 for e in journal if e.kind != "submitted")
    assert {pid for _, epoch, pid in completions(log) if epoch == 2} == {second.pid}


async def test_sigterm_drains_then_releases_to_another_worker(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "completions.log"
    async with Corral(db_url) as app:
        quick = await app.submit_many(
            [{"agent": "work", "input": {"i": i, "sleep": 0.3}} for i in range(4)]
        )
        draining = WorkerProcess(
            db_url, log, ttl=30.0, concurrency=8, drain_timeout=1.0, poll_interval=0.05
        )
        try:
            deadline = time.monotonic() + 30
            while (await app.stats()).in_flight < 4:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            slow = await app.submit_many(
                [{"agent": "work", "input": {"i": i, "sleep": 5}} for i in range(4)]
            )
            while (await app.stats()).in_flight < 8:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            draining.signal(signal.SIGTERM)
            assert draining.wait(timeout=15) == 0
        finally:
            draining.stop()
        for run_id in quick:  # finished inside the drain window
            run = await app.get(run_id)
            assert run.status == RunStatus.SUCCEEDED and run.result["pid"] == draining.pid
        for run_id in slow:  # released: queued again, the attempt not counted
            run = await app.get(run_id)
            assert run.status == RunStatus.QUEUED and run.attempts == 0
        released_at = time.monotonic()
        taker = WorkerProcess(db_url, log, ttl=30.0, concurrency=8, poll_interval=0.05)
        try:
            for run_id in slow:
                run = await app.wait(run_id, timeout=25)
                assert run.status == RunStatus.SUCCEEDED and run.result["pid"] == taker.pid
                assert run.attempts == 1
        finally:
            taker.stop()
    # picked up at once, not after the 30 s lease TTL
    assert time.monotonic() - released_at < 20


async def test_sigterm_ends_a_worker_whose_agent_ignores_cancellation(
    db_url: str, tmp_path: Path
) -> None:
    """A stop is bounded by the drain timeout plus the stop grace even when an agent swallows
    every cancellation: the run is released, the process exits, another worker runs it."""
    log = tmp_path / "completions.log"
    async with Corral(db_url) as app:
        run_id = await app.submit("stubborn", {})
        stubborn = WorkerProcess(
            db_url,
            log,
            ttl=30.0,
            concurrency=2,
            drain_timeout=0.5,
            poll_interval=0.05,
            options=("--stop-grace", "1s"),
            env={"CORRAL_TEST_STUBBORN": "1"},
        )
        try:
            deadline = time.monotonic() + 30
            while not log.exists() or "stubborn" not in log.read_text():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            stubborn.signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert stubborn.wait(timeout=20) == 0
            took = time.monotonic() - signalled
        finally:
            stubborn.stop()
        assert took < 0.5 + 1 + 3  # drain, grace, start-up slack: not a hang
        assert "swallowed" in log.read_text()  # it was told, and ignored it
        assert "exiting with 1 agent(s) still running" in stubborn.stderr()
        assert "did not stop within 1.0 s" in stubborn.stderr()
        run = await app.get(run_id)
        assert run.status == RunStatus.QUEUED and run.attempts == 0  # released, not failed
        taker = WorkerProcess(db_url, log, ttl=30.0, concurrency=2, poll_interval=0.05)
        try:
            run = await app.wait(run_id, timeout=20)
        finally:
            taker.stop()
        assert run.status == RunStatus.SUCCEEDED and run.result["pid"] == taker.pid


async def test_corral_workers_shows_a_sigkilled_worker_as_lost_and_a_stopped_one_gone(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "completions.log"
    ttl = 1.5
    async with Corral(db_url) as app:
        killed = WorkerProcess(db_url, log, ttl=ttl, concurrency=3, poll_interval=0.05)
        stopped = WorkerProcess(db_url, log, ttl=ttl, concurrency=2, poll_interval=0.05)
        try:
            deadline = time.monotonic() + 30
            while {w.pid for w in await app.workers()} != {killed.pid, stopped.pid}:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            killed.signal(signal.SIGKILL)
            killed.wait()
            stopped.signal(signal.SIGTERM)
            assert stopped.wait(timeout=20) == 0
            # the stopped worker removed its report; the killed one could not
            [left] = await app.workers()
            assert (left.pid, left.concurrency) == (killed.pid, 3)
            await asyncio.sleep(max(0.0, left.seen_at + ttl - time.time()) + 0.2)
        finally:
            killed.stop()
            stopped.stop()
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "corral.cli.main", "workers", "--db", db_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    [line] = [ln for ln in shown.stdout.splitlines() if f":{killed.pid}:" in ln]
    assert "lost" in line.split()
