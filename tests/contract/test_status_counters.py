"""Queue statistics and delivery counters come from counters kept by the statements that move
runs, not from counting the runs table: after every way a run can end, the counters equal a
count of the stored runs, on every backend; and a purge does not take ended runs off them."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import pytest

from corral import Corral, NonRetryableError, RunContext
from corral.models import LeaseRef, RunStatus
from tests.support.polling import until

pytestmark = pytest.mark.timeout(90)


async def redelivered(app: Corral) -> int:
    """Deliveries past each stored run's first attempt, counted from the runs themselves."""
    return sum(max(run.attempts - 1, 0) for run in await app.list_runs(limit=1000))


async def counted(app: Corral) -> dict[str, int]:
    runs = await app.list_runs(limit=1000)
    return dict(Counter(run.status.value for run in runs))


async def test_counters_match_the_runs_after_every_way_to_end(db_url: str) -> None:
    app = Corral(db_url)
    release = asyncio.Event()
    flaky_calls: Counter[Any] = Counter()

    @app.agent("ok")
    async def ok(ctx: RunContext, input: Any) -> Any:
        return input

    @app.agent("broken")
    async def broken(ctx: RunContext, input: Any) -> Any:
        raise NonRetryableError("no")

    @app.agent("flaky")
    async def flaky(ctx: RunContext, input: Any) -> Any:
        flaky_calls[input] += 1
        if flaky_calls[input] == 1:
            raise RuntimeError("first attempt fails")
        return input

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> Any:
        return await ctx.wait([await ctx.spawn("ok", n) for n in range(3)])

    @app.agent("blocked")
    async def blocked(ctx: RunContext, input: Any) -> Any:
        await release.wait()
        return input

    @app.agent("stuck_parent")
    async def stuck_parent(ctx: RunContext, input: Any) -> Any:
        return await ctx.wait(await ctx.spawn("blocked", input))

    try:
        for n in range(4):
            await app.submit("ok", n)
        await app.submit("broken")
        await app.submit("flaky", "a")
        await app.submit("parent")  # children acked on the general path (they have a parent)
        doomed = await app.submit("ok", "never", not_before=1e10)
        await app.cancel(doomed)  # queued -> cancelled
        stuck = await app.submit("stuck_parent", "x")
        # a short lease: the heartbeat (ttl/3) soon tells the cancelled child to stop
        worker = app.worker(concurrency=6, poll_interval=0.02, retry_base=0.0, lease_ttl=0.6)
        task = asyncio.create_task(worker.run())
        await until(lambda: app.get(stuck), lambda run: run.status == RunStatus.WAITING)
        await app.cancel(stuck)  # waiting parent -> cancelled; its running child flagged
        await until(app.stats, lambda stats: stats.in_flight == stats.queued == 0)
        worker.stop()
        await asyncio.wait_for(task, 20)

        # a lease that expires with no attempts left: failed by the reaper
        expiring = await app.submit("ok", "late", max_attempts=1)
        (lease,) = await app.store.lease("gone-worker", 0.05, 1)
        assert lease.run_id == expiring
        await asyncio.sleep(0.3)  # past the lease, and past the store's maintenance interval
        await app.store.lease("reaper", 30, 1)  # reclaims expired leases first
        # a running run whose worker gives it back after cancellation was requested
        given_back = await app.submit("ok", "back")
        (lease,) = await app.store.lease("draining-worker", 30, 1)
        await app.cancel(given_back)
        await app.store.release(LeaseRef(lease.run_id, lease.epoch))

        # a redelivery that a draining worker gives back is not one any more
        requeued = await app.submit("ok", "again", max_attempts=3)
        (lease,) = await app.store.lease("gone-again", 0.05, 1)
        await asyncio.sleep(0.3)  # past the lease, and past the store's maintenance interval
        (lease,) = await app.store.lease("draining-again", 30, 1)  # reaps, then attempt 2
        assert (lease.run_id, lease.attempt) == (requeued, 2)
        assert (await app.store.delivery_counters()).redeliveries == await redelivered(app)
        await app.store.release(LeaseRef(lease.run_id, lease.epoch))
        await app.cancel(requeued)

        stats = await app.stats()
        expected = await counted(app)
        assert stats.by_status == expected
        assert expected == {"succeeded": 9, "failed": 2, "cancelled": 5}
        (tenant,) = stats.tenants  # every run here is the default tenant's
        assert (tenant.succeeded, tenant.failed, tenant.cancelled) == (9, 2, 5)
        assert (stats.queued, stats.in_flight, stats.waiting) == (0, 0, 0)
        deliveries = await app.store.delivery_counters()
        # flaky's retry; the expired leases of `expiring` (last attempt: a dead letter) and
        # `requeued` (redelivered, then released: no longer a redelivery)
        assert deliveries.redeliveries == await redelivered(app) == 1
        assert deliveries.lease_expiry_dead_letters == 1

        # ended runs stay counted when they are purged
        assert await app.purge_finished(0) == 16
        assert (await app.stats()).by_status == expected
        assert await app.store.delivery_counters() == deliveries
        assert await counted(app) == {}
    finally:
        release.set()
        await app.close()


async def test_waiting_runs_are_counted(db_url: str) -> None:
    app = Corral(db_url)
    release = asyncio.Event()

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> Any:
        await release.wait()
        return input

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> Any:
        return await ctx.wait(await ctx.spawn("child", input))

    worker = app.worker(concurrency=4, poll_interval=0.02)
    try:
        parents = [await app.submit("parent", n) for n in range(2)]
        task = asyncio.create_task(worker.run())
        for _ in range(500):
            stats = await app.stats()
            if stats.waiting == 2 and stats.in_flight == 2:
                break
            await asyncio.sleep(0.02)
        assert stats.by_status == await counted(app) == {"waiting": 2, "running": 2}
        release.set()
        for run_id in parents:
            await app.wait(run_id, timeout=20)
        worker.stop()
        await asyncio.wait_for(task, 20)
        assert (await app.stats()).by_status == await counted(app) == {"succeeded": 4}
    finally:
        release.set()
        worker.stop()
        await app.close()


async def test_a_redelivered_run_that_suspends_counts_one_redelivery(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("napper")
    async def napper(ctx: RunContext, input: Any) -> Any:
        await ctx.sleep(0.1)  # suspends: gives its attempt back, as a release does
        return input

    try:
        run_id = await app.submit("napper", 1)
        assert [x.run_id for x in await app.store.lease("gone-worker", 0.05, 1)] == [run_id]
        await asyncio.sleep(0.3)  # past the lease, and past the store's maintenance interval
        worker = app.worker(concurrency=2, poll_interval=0.02)
        await asyncio.wait_for(worker.run(until_idle=True), 30)
        run = await app.get(run_id)
        assert run.status == RunStatus.SUCCEEDED and run.attempts == 2
        assert (await app.store.delivery_counters()).redeliveries == await redelivered(app) == 1
    finally:
        await app.close()


async def test_the_count_of_runs_never_goes_backwards_while_runs_move(db_url: str) -> None:
    """stats() reads the tenants' counters and the waiting runs in two statements: both must
    see one moment, or a run moving between queued/running and waiting is counted twice or
    not at all, and /metrics' runs-submitted counter goes backwards (a reset to Prometheus)."""
    app = Corral(db_url)

    @app.agent("leaf")
    async def leaf(ctx: RunContext, input: Any) -> int:
        return 1

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> int:
        total = 0
        for _ in range(3):  # waiting, queued, running, waiting again...
            total += sum(await ctx.wait(await ctx.spawn("leaf")))
        return total

    async with app:
        await app.submit_many([{"agent": "parent"} for _ in range(40)])
        worker = app.worker(concurrency=8, poll_interval=0.01)
        running = asyncio.create_task(worker.run(until_idle=True))
        totals: list[int] = []
        while not running.done():
            stats = await app.stats()
            totals.append(sum(stats.by_status.values()))
        await running
    drops = [(a, b) for a, b in itertools.pairwise(totals) if b < a]
    assert drops == [], drops[:5]
    assert totals[-1] == 40 * 4 and len(totals) > 20
