"""Retention (``purge_finished``) on every backend: ended runs go with their journals, a tree
only once all of it has ended, never a run that is still queued, running or waiting."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from corral import Corral, NonRetryableError, RunContext
from corral.errors import InvalidInput, RunNotFound
from corral.models import RunStatus
from tests.support.polling import until
from tests.support.postgres import fresh_schema, sessions_waiting_on_locks, until_blocked

pytestmark = pytest.mark.timeout(60)


async def drain(app: Corral) -> None:
    worker = app.worker(concurrency=8, poll_interval=0.02, retry_base=0.0)
    await asyncio.wait_for(worker.run(until_idle=True), 45)


def app_with_fire_and_forget(db_url: str) -> tuple[Corral, asyncio.Event]:
    """An app whose "fire_and_forget" run ends before its "slow" child, which runs until the
    event is set."""
    app = Corral(db_url)
    release = asyncio.Event()

    @app.agent("slow")
    async def slow(ctx: RunContext, input: Any) -> Any:
        await release.wait()
        return "done"

    @app.agent("fire_and_forget")
    async def fire_and_forget(ctx: RunContext, input: Any) -> Any:
        await ctx.spawn("slow")  # not awaited: this run ends before its child
        return "spawned"

    return app, release


async def test_ended_runs_and_trees_go_with_their_journals(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("leaf")
    async def leaf(ctx: RunContext, input: Any) -> Any:
        return input

    @app.agent("mid")
    async def mid(ctx: RunContext, input: Any) -> Any:
        return await ctx.wait(await ctx.spawn("leaf", input))

    @app.agent("root")
    async def root(ctx: RunContext, input: Any) -> Any:
        return await ctx.wait([await ctx.spawn("mid", n) for n in (1, 2)])

    @app.agent("broken")
    async def broken(ctx: RunContext, input: Any) -> Any:
        raise NonRetryableError("no")

    try:
        tree = await app.submit("root")
        single = await app.submit("leaf", 7)
        failed = await app.submit("broken")
        cancelled = await app.submit("leaf", not_before=1e10)
        await app.cancel(cancelled)
        await drain(app)
        family = [run.id for run in await app.list_runs(limit=100)]
        assert len(family) == 8  # root, 2 mids, 2 leaves, single, failed, cancelled
        assert (await app.get(failed)).status == RunStatus.FAILED

        assert await app.purge_finished(3600) == 0  # all ended moments ago
        kept = await app.submit("leaf", not_before=1e10)  # queued: never purged
        assert await app.purge_finished(0) == 8
        assert await app.purge_finished(0) == 0
        for run_id in family:
            with pytest.raises(RunNotFound):
                await app.get(run_id)
            assert await app.store.journal(run_id) == []
        assert [r.id for r in await app.list_runs(limit=100)] == [kept]
        assert tree in family and single in family
        stats = await app.stats()
        assert stats.queued == 1 and stats.in_flight == 0
    finally:
        await app.close()


async def test_a_tree_stays_while_any_run_in_it_has_not_ended(db_url: str) -> None:
    app, release = app_with_fire_and_forget(db_url)

    try:
        root = await app.submit("fire_and_forget")
        worker = asyncio.create_task(drain(app))
        assert (await app.wait(root, timeout=30)).status == RunStatus.SUCCEEDED
        assert await app.purge_finished(0) == 0  # the root ended, its child has not
        assert (await app.get(root)).status == RunStatus.SUCCEEDED
        release.set()
        await worker
        assert await app.purge_finished(0) == 2
        with pytest.raises(RunNotFound):
            await app.get(root)
    finally:
        release.set()
        await app.close()


async def test_trees_held_back_do_not_stop_the_purge_behind_them(db_url: str) -> None:
    """More ended roots whose trees have not ended than one batch holds: the purge looks past
    them (in a batch of 2, the 3 held roots come first) instead of finding nothing forever."""
    app, release = app_with_fire_and_forget(db_url)

    @app.agent("leaf")
    async def leaf(ctx: RunContext, input: Any) -> Any:
        return input

    try:
        held = [await app.submit("fire_and_forget", n) for n in range(3)]
        worker = asyncio.create_task(drain(app))
        for root in held:
            assert (await app.wait(root, timeout=30)).status == RunStatus.SUCCEEDED
        done = [await app.submit("leaf", n) for n in range(3)]
        for run_id in done:
            assert (await app.wait(run_id, timeout=30)).status == RunStatus.SUCCEEDED
        assert [await app.purge_finished(0, limit=2) for _ in range(3)] == [2, 1, 0]
        for run_id in done:
            with pytest.raises(RunNotFound):
                await app.get(run_id)
        for root in held:
            assert (await app.get(root)).status == RunStatus.SUCCEEDED
        release.set()
        await worker
        assert await app.purge_finished(0, limit=2) == 4  # two trees of two runs
        assert await app.purge_finished(0, limit=2) == 2
    finally:
        release.set()
        await app.close()


async def test_purge_goes_in_batches_and_frees_idempotency_keys(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("leaf")
    async def leaf(ctx: RunContext, input: Any) -> Any:
        return input

    try:
        first = [await app.submit("leaf", n, idempotency_key=f"k{n}") for n in range(5)]
        await drain(app)
        assert [await app.purge_finished(0, limit=2) for _ in range(4)] == [2, 2, 1, 0]
        again = await app.submit("leaf", 0, idempotency_key="k0")
        assert again not in first
        with pytest.raises(InvalidInput):
            await app.purge_finished(-1)
        with pytest.raises(InvalidInput):
            await app.purge_finished(0, limit=0)
    finally:
        await app.close()


async def test_a_worker_with_retain_deletes_ended_runs_as_it_goes(db_url: str) -> None:
    app = Corral(db_url)
    release = asyncio.Event()

    @app.agent("leaf")
    async def leaf(ctx: RunContext, input: Any) -> Any:
        return input

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> Any:
        return await ctx.wait(await ctx.spawn("slow", input))

    @app.agent("slow")
    async def slow(ctx: RunContext, input: Any) -> Any:
        await release.wait()
        return input

    worker = app.worker(concurrency=4, poll_interval=0.02, retain=0.2, retention_interval=0.05)
    try:
        ended = [await app.submit("leaf", n) for n in range(3)]
        waiting = await app.submit("parent", 1)  # waits on its child, which runs until released
        queued = await app.submit("leaf", 3, not_before=1e10)
        task = asyncio.create_task(worker.run())

        async def gone(run_id: str) -> bool:
            try:
                await app.get(run_id)
            except RunNotFound:
                return True
            return False

        deadline = asyncio.get_running_loop().time() + 20
        while not all([await gone(r) for r in ended]):
            assert asyncio.get_running_loop().time() < deadline, "ended runs were not purged"
            await asyncio.sleep(0.05)
        while not (children := await app.store.children(waiting)):
            assert asyncio.get_running_loop().time() < deadline, "the parent spawned nothing"
            await asyncio.sleep(0.02)
        running = children[0].id
        await asyncio.sleep(0.3)  # a few more passes: what has not ended stays
        assert (await app.get(waiting)).status == RunStatus.WAITING
        assert (await app.get(running)).status == RunStatus.RUNNING
        assert (await app.get(queued)).status == RunStatus.QUEUED
        assert worker.purged >= 3
        release.set()
        while not (await gone(waiting) and await gone(running)):  # the tree goes once it ended
            assert asyncio.get_running_loop().time() < deadline + 20, "the tree was not purged"
            await asyncio.sleep(0.05)
        assert worker.purged >= 5
        worker.stop()
        await asyncio.wait_for(task, 20)
    finally:
        release.set()
        worker.stop()
        await app.close()


def test_retain_is_validated() -> None:
    app = Corral("sqlite:///unused.db")
    with pytest.raises(InvalidInput):
        app.worker(retain=-1)
    with pytest.raises(InvalidInput):
        app.worker(retain=60, retention_interval=0)


async def test_a_purge_and_a_retry_of_the_same_tree_never_leave_half_of_it(pg_dsn: str) -> None:
    """A retry that comes while a purge deletes the failed tree it has found: either the purge
    takes the whole tree (and the retry finds no run), or the retry wins and the tree keeps
    its journal and its children. (PostgreSQL: SQLite has one writer, so no purge is midway
    while a retry runs.)"""
    with fresh_schema(pg_dsn) as dsn:
        app = Corral(dsn)
        fail = True

        @app.agent("leaf")
        async def leaf(ctx: RunContext, input: Any) -> Any:
            return input

        @app.agent("root")
        async def root(ctx: RunContext, input: Any) -> Any:
            got = await ctx.wait(await ctx.spawn("leaf", 7))
            if fail:
                raise NonRetryableError("not yet")
            return got

        try:
            root_id = await app.submit("root")
            await drain(app)
            assert (await app.get(root_id)).status == RunStatus.FAILED
            (child_id,) = [r.id for r in await app.list_runs() if r.id != root_id]
            journal = [e.kind for e in await app.store.journal(root_id)]
            fail = False
            async with (
                await psycopg.AsyncConnection.connect(dsn) as holder,
                await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher,
            ):
                # the purge has found the tree and stops at the root's first journal entry
                await holder.execute(
                    "SELECT 1 FROM corral_journal WHERE run_id = %s AND seq = 1 FOR UPDATE",
                    (root_id,),
                )
                purging = asyncio.create_task(app.purge_finished(0))
                await until_blocked(watcher, 1)
                retrying = asyncio.create_task(app.retry(root_id))
                # the retry either waits for the purge or is done
                await until(
                    lambda: sessions_waiting_on_locks(watcher),
                    lambda n: n >= 2 or retrying.done(),
                    seconds=10,
                )
                await holder.rollback()
                purged = await asyncio.wait_for(purging, 10)
                retried = (await asyncio.gather(retrying, return_exceptions=True))[0]
            if isinstance(retried, RunNotFound):
                assert purged == 2
                for run_id in (root_id, child_id):
                    with pytest.raises(RunNotFound):
                        await app.get(run_id)
                    assert await app.store.journal(run_id) == []
            else:
                assert not isinstance(retried, BaseException), retried
                assert purged == 0
                kinds = [e.kind for e in await app.store.journal(root_id)]
                assert kinds[: len(journal)] == journal and kinds[-1] == "retried"
                await drain(app)
                done = await app.get(root_id)
                assert (done.status, done.result) == (RunStatus.SUCCEEDED, 7)
                assert (await app.get(child_id)).status == RunStatus.SUCCEEDED
        finally:
            await app.close()
