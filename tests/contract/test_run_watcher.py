"""``Store.progress`` and the service's ``RunWatcher`` on every backend: the status and journal
length of many runs in one read, and event streams that share one poll for all of them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import Corral, RunContext
from corral.api.watch import RunWatcher
from corral.models import RunStatus

pytestmark = pytest.mark.timeout(60)


async def test_progress_is_status_and_last_journal_seq(db_url: str) -> None:
    app = Corral(db_url)
    go = asyncio.Event()

    @app.agent("stepper")
    async def stepper(ctx: RunContext, input: Any) -> Any:
        await ctx.step("one", lambda: 1)
        await ctx.emit("note", {"n": 2})
        await go.wait()
        return "done"

    try:
        run_id = await app.submit("stepper")
        queued = await app.submit("stepper", not_before=1e10)
        assert await app.store.progress([run_id, queued, "no-such-run"]) == {
            run_id: (RunStatus.QUEUED, 1),
            queued: (RunStatus.QUEUED, 1),
        }
        assert await app.store.progress([]) == {}
        worker = app.worker(concurrency=2, poll_interval=0.02)
        task = asyncio.create_task(worker.run())
        for _ in range(500):
            status, seq = (await app.store.progress([run_id]))[run_id]
            if seq > 2:
                break
            await asyncio.sleep(0.01)
        entries = await app.store.journal(run_id)
        assert (status, seq) == (RunStatus.RUNNING, entries[-1].seq)
        go.set()
        await app.wait(run_id, timeout=20)
        entries = await app.store.journal(run_id)
        assert (await app.store.progress([run_id]))[run_id] == (
            RunStatus.SUCCEEDED,
            entries[-1].seq,
        )
        worker.stop()
        await asyncio.wait_for(task, 20)
    finally:
        go.set()
        await app.close()


async def test_idle_streams_share_one_poll_and_wake_on_news(db_url: str) -> None:
    app = Corral(db_url)

    speak = asyncio.Event()

    @app.agent("noop")
    async def noop(ctx: RunContext, input: Any) -> Any:
        return input

    @app.agent("talker")
    async def talker(ctx: RunContext, input: Any) -> Any:
        await ctx.emit("hello", None)
        await speak.wait()
        await ctx.emit("again", None)
        await asyncio.sleep(0.5)
        return None

    try:
        idle = [await app.submit("noop", n, not_before=1e10) for n in range(40)]
        watcher = RunWatcher(app.store, interval=0.05)
        loop = asyncio.get_running_loop()

        started = loop.time()
        await asyncio.gather(*(watcher.wait(r, 1, timeout=0.5) for r in idle))
        assert loop.time() - started >= 0.45  # nothing happened: every wait ran to its timeout
        # 40 streams over ~10 intervals: one read of all of them per interval, not 40
        assert 5 <= watcher.polls <= 15, watcher.polls
        assert watcher.watched == 0

        # news wakes only the stream it concerns, within about an interval
        news = idle[0]
        waiting = [asyncio.create_task(watcher.wait(r, 1, timeout=10)) for r in idle[:5]]
        await asyncio.sleep(0.1)
        started = loop.time()
        await app.cancel(news)  # ended: its stream must send the end
        await asyncio.wait({waiting[0]}, timeout=5)
        assert waiting[0].done() and loop.time() - started < 1.0
        assert not any(t.done() for t in waiting[1:])

        # a stream that already sent every entry the store has sleeps; a new entry wakes it
        worker = app.worker(concurrency=1, poll_interval=0.02)
        runner = asyncio.create_task(worker.run())
        talker = await app.submit("talker")
        for _ in range(500):  # until its first emit is in the journal
            if (seq := (await app.store.progress([talker]))[talker][1]) >= 2:
                break
            await asyncio.sleep(0.01)
        started = loop.time()
        await watcher.wait(talker, seq, timeout=0.3)
        assert loop.time() - started >= 0.25  # nothing new: the full timeout
        woken = asyncio.create_task(watcher.wait(talker, seq, timeout=10))
        await asyncio.sleep(0.1)
        started = loop.time()
        speak.set()
        await asyncio.wait({woken}, timeout=5)
        assert woken.done() and loop.time() - started < 1.0
        await watcher.close()
        await asyncio.gather(*waiting)  # close wakes every waiter
        worker.stop()
        await asyncio.wait_for(runner, 20)
    finally:
        speak.set()
        await app.close()
