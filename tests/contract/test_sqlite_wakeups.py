"""An idle worker on SQLite wakes when another process commits work, without waiting to poll.

SQLite has no LISTEN/NOTIFY: a waiting worker looks at ``PRAGMA data_version`` every few
milliseconds. Processes on one machine now also wake each other through Unix datagram sockets
(``corral.store.sqlite_wake``). The poll is slowed to far beyond the test's bounds here, so
only the wake-up can explain a prompt return. Processes are real and are killed for real.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import corral.store.sqlite as sqlite_backend
from corral.models import LeaseRef, RunSpec
from corral.store import create_store, sqlite_wake
from corral.store.sqlite_wake import WakeChannel, wake_directory

pytestmark = pytest.mark.skipif(not WakeChannel.supported(), reason="no Unix sockets here")

SUBMIT = """
import asyncio, sys
from corral.models import LeaseRef, RunSpec
from corral.store import create_store

async def main():
    store = create_store(sys.argv[1])
    await store.open()
    await store.submit([RunSpec("echo", tenant="acme")])
    await store.close()

asyncio.run(main())
"""

ACQUIRE = """
import asyncio, sys, time
from corral.contention.shared import SharedScheduler
from corral.store import create_store

async def main():
    store = create_store(sys.argv[1])
    await store.open()
    llm = SharedScheduler(store, "llm", capacity=1, max_waiters=10, lease_ttl=30.0,
                          poll_interval=float(sys.argv[2]))
    await llm.open()
    print("waiting", flush=True)
    handle = await llm.acquire_start("b")
    print(f"acquired {time.time()}", flush=True)
    await llm.release_handle(handle)
    await llm.close()
    await store.close()

asyncio.run(main())
"""

WAIT = """
import asyncio, sys
from corral.store import create_store

async def main():
    store = create_store(sys.argv[1])
    await store.open()
    waiting = asyncio.ensure_future(store.wait_for_work(60.0))
    await asyncio.sleep(0.2)
    print("waiting", flush=True)
    await waiting

asyncio.run(main())
"""


def _sockets(db: Path) -> list[str]:
    folder = wake_directory(str(db))
    return sorted(p.name for p in folder.glob("*.sock")) if folder.exists() else []


async def _submit_in_another_process(url: str) -> None:
    submitter = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUBMIT, url, stderr=subprocess.PIPE
    )
    _, err = await submitter.communicate()
    assert submitter.returncode == 0, err.decode()


async def _start_waiting(script: str, *args: str) -> asyncio.subprocess.Process:
    """Another process running ``script``, once it has printed "waiting"."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(script),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line.decode().strip() == "waiting", line
    except BaseException:
        proc.kill()
        await proc.communicate()
        raise
    return proc


async def test_a_submit_in_another_process_wakes_a_waiting_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "corral.db"
    url = f"sqlite:///{db}"
    # the poll alone would see the commit only when the wait times out
    monkeypatch.setattr(sqlite_backend, "POLL_INTERVAL", 60.0)
    store = create_store(url)
    await store.open()
    try:
        waiting = asyncio.ensure_future(store.wait_for_work(30.0))
        await asyncio.sleep(0.1)
        assert len(_sockets(db)) == 1
        started = time.monotonic()
        await _submit_in_another_process(url)
        await asyncio.wait_for(waiting, timeout=10.0)
        assert time.monotonic() - started < 10.0
        assert (await store.stats()).queued == 1
    finally:
        await store.close()
    assert _sockets(db) == []


async def test_a_wait_that_ends_leaves_the_others_listening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two waits in one process (two workers sharing a store): the first to end must not stop
    the wake-ups of the other."""
    db = tmp_path / "corral.db"
    url = f"sqlite:///{db}"
    monkeypatch.setattr(sqlite_backend, "POLL_INTERVAL", 60.0)
    store = create_store(url)
    await store.open()
    try:
        short = asyncio.ensure_future(store.wait_for_work(0.2))
        long = asyncio.ensure_future(store.wait_for_work(30.0))
        await short
        assert not long.done()
        await _submit_in_another_process(url)
        await asyncio.wait_for(long, timeout=10.0)
    finally:
        await store.close()


async def test_a_grant_reaches_a_waiter_in_another_process_without_a_poll(
    tmp_path: Path,
) -> None:
    """A shared resource's slot handed to another process's waiter: the wake-up names the
    request granted (as PostgreSQL's notification does), so the waiter takes it at once
    rather than at its next poll."""
    from corral.contention.shared import SharedScheduler

    db = tmp_path / "corral.db"
    url = f"sqlite:///{db}"
    poll = 10.0  # the waiter's own poll would see the grant up to this late
    store = create_store(url)
    await store.open()
    llm = SharedScheduler(
        store, "llm", capacity=1, max_waiters=10, lease_ttl=30.0, poll_interval=poll
    )
    held = await llm.acquire_start("a")
    waiter = await _start_waiting(ACQUIRE, url, str(poll))
    try:
        await asyncio.sleep(1.0)  # its request is queued behind ours, its poll done
        released = time.time()
        await llm.release_handle(held)
        line = await asyncio.wait_for(waiter.stdout.readline(), timeout=2 * poll)
        word, at = line.decode().split()
        assert word == "acquired"
        assert float(at) - released < poll / 4, float(at) - released
        await asyncio.wait_for(waiter.wait(), timeout=10)
        assert waiter.returncode == 0
    finally:
        if waiter.returncode is None:
            waiter.kill()
        await waiter.communicate()
        await llm.close()
        await store.close()


async def test_a_killed_process_socket_is_removed_by_the_next_sender(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    url = f"sqlite:///{db}"
    store = create_store(url)
    await store.open()  # the schema exists before the waiter starts
    waiter = await _start_waiting(WAIT, url)
    try:
        (left_behind,) = _sockets(db)
        assert left_behind.startswith(f"{waiter.pid}-")
        os.kill(waiter.pid, signal.SIGKILL)
        await asyncio.wait_for(waiter.wait(), timeout=10)
        assert _sockets(db) == [left_behind]  # a killed process removes nothing
        await store.submit([RunSpec("echo", tenant="acme")])
        assert _sockets(db) == []
        assert not wake_directory(str(db)).exists()
    finally:
        if waiter.returncode is None:
            waiter.kill()
        await waiter.communicate()
        await store.close()


async def test_a_store_closed_under_a_wait_stops_reading_cleanly(tmp_path: Path) -> None:
    """A shared resource's wait may be cancelled only after its store closed (the demo's
    shutdown did this): the reader goes with the socket, and the wait ends without error."""
    store = create_store(f"sqlite:///{tmp_path / 'corral.db'}")
    await store.open()
    waiting = asyncio.ensure_future(store.wait_for_change(0, 30.0))
    await asyncio.sleep(0.05)
    await store.close()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert _sockets(tmp_path / "corral.db") == []


def test_a_socket_bound_just_after_a_send_gets_the_next_one(tmp_path: Path) -> None:
    """A sender re-reads the directory when a socket is bound in it, not only once a second:
    a worker or waiter that has just started is woken by the very next commit."""
    db = str(tmp_path / "corral.db")
    sender, receiver = WakeChannel(db), WakeChannel(db)
    try:
        assert sender.listen() is not None
        sender.notify()  # finds no one else
        assert receiver.listen() is not None
        sender.notify(b"g" + b"r1,r2")
        assert receiver.drain() == [b"gr1,r2"]
        assert sender.drain() == []  # not to itself
    finally:
        sender.close()
        receiver.close()
    assert not wake_directory(db).exists()


def test_a_socket_that_cannot_be_bound_is_tried_again_later_not_at_every_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every idle wait asks for the socket: one that failed to bind is tried again after
    LISTEN_RETRY, not on each of them, and then bound once it can be."""
    blocked = tmp_path / "corral.db-wake"
    blocked.write_text("")  # a file where the directory goes: binding fails
    channel = WakeChannel(str(tmp_path / "corral.db"))
    try:
        assert channel.listen() is None
        blocked.unlink()
        assert channel.listen() is None  # not tried again at once
        monkeypatch.setattr(sqlite_wake, "LISTEN_RETRY", 0.0)
        assert channel.listen() is not None
    finally:
        channel.close()


async def test_a_commit_that_gives_a_lease_nothing_leaves_a_waiting_worker_waiting(
    tmp_path: Path,
) -> None:
    """A waiting worker sees every commit of every process (data_version, wake-ups). Woken by
    another process's, it looks, reading only, whether a lease could take anything, and waits
    on if not: taking the file's write lock for an empty lease on every commit anywhere cost 8
    idle worker processes 0.7 of a core."""
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    waiter, other = create_store(url), create_store(url)  # each as a process's own
    await waiter.open()
    await other.open()
    try:
        await other.set_tenant("capped", cap=1)
        await other.submit([RunSpec("echo", tenant="capped")])
        (lease,) = await other.lease("w", 30.0, 1)
        ref = LeaseRef(lease.run_id, lease.epoch)
        waiting = asyncio.ensure_future(waiter.wait_for_work(30.0))
        await asyncio.sleep(0.2)
        # commits a lease can take nothing from: a run of a tenant at its cap, a heartbeat,
        # a run due in an hour
        await other.submit([RunSpec("echo", tenant="capped")])
        await other.heartbeat(ref, 30.0)
        await other.submit([RunSpec("echo", tenant="free", not_before=time.time() + 3600)])
        await asyncio.sleep(0.5)  # many polls of data_version
        assert not waiting.done()
        # the ack frees the capped tenant's slot: its queued run can go now
        await other.ack(ref, None)
        await asyncio.wait_for(waiting, timeout=5.0)
    finally:
        await other.close()
        await waiter.close()
