"""``start_within``: a run that has not started that long after it is due ends failed with
RunExpired, its agent never called and without retries; a run started in time, a delayed run
counted from its due time, and a run past its first attempt are untouched. A run waiting
past its limit is ended by the workers' look (``Store.expire_overdue``) without waiting for a
lease: its depth and quota freed, each run once however many workers look."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import BackpressureError, Corral, InvalidInput, RunContext
from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.models import LeaseRef, RunSpec, RunStatus
from corral.store import Store, create_store
from corral.worker import expiry
from tests.support.inprocess import work_until_all_ended

pytestmark = pytest.mark.timeout(60)


def build(db_url: str, calls: list[Any]) -> Corral:
    app = Corral(db_url)

    @app.agent("answer")
    async def answer(ctx: RunContext, input: Any) -> Any:
        calls.append(input)
        return input

    return app


async def test_a_run_not_started_within_its_limit_ends_unrun_and_unretried(
    db_url: str,
) -> None:
    calls: list[Any] = []
    app = build(db_url, calls)
    async with app:
        stale = await app.submit("answer", "stale", start_within=0.2, max_attempts=3)
        patient = await app.submit("answer", "patient", start_within=60)
        unbounded = await app.submit("answer", "unbounded")
        before = await app.get(stale)
        await asyncio.sleep(0.5)  # nobody works: the first run's limit passes
        ended = await work_until_all_ended(app, [stale, patient, unbounded], timeout=20)
    assert before.start_by == pytest.approx(before.available_at + 0.2)
    expired, ran, other = ended
    assert expired.status is RunStatus.FAILED and expired.attempts == 1  # no retries
    assert expired.error["type"] == "RunExpired"
    assert f"run {stale} was not started in time" in expired.error["message"]
    assert ran.status is other.status is RunStatus.SUCCEEDED
    assert sorted(calls) == ["patient", "unbounded"]  # the expired run's agent never ran


async def test_a_delayed_run_counts_from_its_due_time(db_url: str) -> None:
    calls: list[Any] = []
    app = build(db_url, calls)
    async with app:
        # due in 0.5 s and must start within 1 s of that: a worker running throughout
        # starts it at its due time, long after the submit
        run_id = await app.submit("answer", "later", delay=0.5, start_within=1)
        (run,) = await work_until_all_ended(app, [run_id], timeout=20)
    assert run.status is RunStatus.SUCCEEDED and calls == ["later"]
    assert run.start_by == pytest.approx(run.available_at + 1)


async def test_an_operators_retry_runs_an_expired_run(db_url: str) -> None:
    calls: list[Any] = []
    app = build(db_url, calls)
    async with app:
        run_id = await app.submit("answer", "again", start_within=0.1)
        await asyncio.sleep(0.3)
        (expired,) = await work_until_all_ended(app, [run_id], timeout=20)
        assert expired.error["type"] == "RunExpired" and calls == []
        await app.retry(run_id)  # its next delivery is not its first attempt: it runs
        (ran,) = await work_until_all_ended(app, [run_id], timeout=20)
    assert ran.status is RunStatus.SUCCEEDED and calls == ["again"]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "5", True])
async def test_a_start_within_that_is_not_a_positive_number_is_refused(
    db_url: str, bad: object
) -> None:
    async with Corral(db_url) as app:
        with pytest.raises(InvalidInput, match="start_within"):
            await app.submit("echo", start_within=bad)  # type: ignore[arg-type]
        assert (await app.stats()).queued == 0


async def test_a_late_run_expires_even_on_a_worker_without_its_agent(db_url: str) -> None:
    """Expiry comes before the agent is looked up: otherwise the first attempt failed as
    'agent not on this worker', and the retry, no longer a first attempt, never expired."""
    async with Corral(db_url) as client:  # a bare client: any agent name is accepted
        run_id = await client.submit("elsewhere", start_within=0.1)
    await asyncio.sleep(0.3)
    calls: list[Any] = []
    app = build(db_url, calls)  # has "answer", not "elsewhere"
    async with app:
        (run,) = await work_until_all_ended(app, [run_id], timeout=10)
    assert run.status is RunStatus.FAILED and run.attempts == 1
    assert run.error["type"] == "RunExpired"


async def test_a_child_not_started_within_its_limit_fails_its_parents_wait(db_url: str) -> None:
    app = Corral(db_url)
    calls: list[str] = []

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> Any:
        calls.append(input)
        return input

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> Any:
        late = await ctx.spawn("child", "late", start_within=0.1)
        calm = await ctx.spawn("child", "calm", start_within=60)
        # the parent holds the only slot past the first child's limit
        await ctx.step("hold", asyncio.sleep, 0.4)
        outcomes = await ctx.wait(late, calm, return_exceptions=True)
        return [getattr(o, "status", o) for o in outcomes]

    @app.agent("careless")
    async def careless(ctx: RunContext, input: Any) -> Any:
        try:
            await ctx.spawn("child", "never", start_within=0)
        except InvalidInput as exc:
            return str(exc)
        return "spawned"

    async with app:
        root = await app.submit("parent")
        refused = await app.submit("careless")
        ended, other = await work_until_all_ended(app, [root, refused], timeout=20, concurrency=1)
        kids = await app.list_runs(agent="child")
    assert ended.status is RunStatus.SUCCEEDED, ended.error
    assert ended.result == ["failed", "calm"]
    late_run = next(k for k in kids if k.input == "late")
    assert late_run.error["type"] == "RunExpired" and calls == ["calm"]
    assert "start_within" in other.result and len(kids) == 2  # nothing spawned for it


async def test_a_run_waiting_past_its_limit_is_ended_without_a_lease(
    store: Store, clock: FakeClock
) -> None:
    """The store's look (every worker makes it every few seconds) ends runs past their
    limit while they wait, uncounted as an attempt; it frees the tenant's depth and quota."""
    await store.set_tenant("acme", max_queued=3)
    stale, patient, unbounded = await store.submit(
        [
            RunSpec("answer", "stale", tenant="acme", start_within=10),
            RunSpec("answer", "patient", tenant="acme", start_within=60),
            RunSpec("answer", "unbounded", tenant="acme"),
        ]
    )
    with pytest.raises(BackpressureError):
        await store.submit([RunSpec("answer", "more", tenant="acme")])
    assert await store.expire_overdue() == 0  # nothing past its limit yet
    clock.now += 11
    assert await store.expire_overdue() == 1
    assert await store.expire_overdue() == 0  # each run once
    run = await store.get(stale)
    assert run is not None and run.status is RunStatus.FAILED
    assert run.attempts == 0 and run.finished_at == clock.now  # never delivered
    assert run.error["type"] == "RunExpired" and run.error["attempt"] == 0
    assert f"run {stale} was not started in time: 1 s past" in run.error["message"]
    for other in (patient, unbounded):
        waiting = await store.get(other)
        assert waiting is not None and waiting.status is RunStatus.QUEUED
    stats = await store.stats()
    acme = stats.tenant("acme")
    assert acme is not None and (acme.queued, acme.failed) == (2, 1)
    assert stats.queued == 2
    await store.submit([RunSpec("answer", "more", tenant="acme")])  # room again


async def test_an_operators_retry_runs_a_run_the_stores_look_expired(
    store: Store, clock: FakeClock
) -> None:
    """A run ended by expire_overdue was never delivered (no attempt, never started): an
    operator's retry must not leave it to the same look, nor its lease to RunExpired."""
    (run_id,) = await store.submit([RunSpec("answer", "late", start_within=1)])
    clock.now += 5
    assert await store.expire_overdue() == 1
    retried = await store.retry(run_id)
    assert retried.status is RunStatus.QUEUED
    clock.now += 1
    assert await store.expire_overdue() == 0
    (lease,) = await store.lease("w1", 60.0, 1)
    assert (lease.run_id, lease.start_by) == (run_id, None)  # the worker runs its agent


async def test_a_run_leased_in_time_or_past_its_first_attempt_is_not_expired(
    store: Store, clock: FakeClock
) -> None:
    (leased,) = await store.submit([RunSpec("answer", "leased", start_within=5)])
    (lease,) = await store.lease("w1", 60.0, 1)
    assert lease.run_id == leased
    (released,) = await store.submit([RunSpec("answer", "retried", start_within=5)])
    (second,) = await store.lease("w1", 60.0, 1)
    again = LeaseRef(second.run_id, second.epoch)
    await store.fail(again, {"type": "Boom"}, retryable=True)  # queued again, attempt 1
    clock.now += 30
    assert await store.expire_overdue() == 0
    for run_id, status in ((leased, RunStatus.RUNNING), (released, RunStatus.QUEUED)):
        run = await store.get(run_id)
        assert run is not None and run.status is status


async def test_a_run_that_started_in_time_is_not_expired_when_it_is_queued_again(
    store: Store, clock: FakeClock
) -> None:
    """A run released by a draining worker (or back from ctx.wait or ctx.sleep) is queued
    with its attempt given back, as if undelivered; it has started all the same, and only a
    run's first start is held to its limit."""
    (run_id,) = await store.submit([RunSpec("answer", "drained", start_within=5)])
    (first,) = await store.lease("w1", 60.0, 1)
    assert first.start_by == pytest.approx(clock.now + 5)  # the lease that starts it: checked
    await store.release(LeaseRef(first.run_id, first.epoch))
    clock.now += 30
    assert await store.expire_overdue() == 0
    (again,) = await store.lease("w2", 60.0, 1)
    assert (again.run_id, again.attempt, again.start_by) == (run_id, 1, None)


async def test_a_run_given_back_unstarted_is_held_to_its_limit_again(
    store: Store, clock: FakeClock
) -> None:
    """A lease given back with its agent never called (a handed run a full worker returns)
    unstarts the run it started; a run started by an earlier lease stays started."""
    (drained,) = await store.submit([RunSpec("answer", "drained", start_within=5)])
    (ran,) = await store.lease("w1", 60.0, 1)
    await store.release(LeaseRef(ran.run_id, ran.epoch))  # started: its agent ran
    clock.now += 1
    (again,) = await store.lease("w1", 60.0, 1)
    assert again.run_id == drained and again.start_by is None
    (unrun,) = await store.submit([RunSpec("answer", "unrun", start_within=5)])
    (first,) = await store.lease("w1", 60.0, 1)
    assert first.run_id == unrun and first.start_by is not None
    for lease in (first, again):
        await store.release(LeaseRef(lease.run_id, lease.epoch), unstarted=True)
    clock.now += 30
    assert await store.expire_overdue() == 1
    expired = await store.get(unrun)
    assert expired is not None and expired.status is RunStatus.FAILED
    assert expired.error["type"] == "RunExpired"
    still = await store.get(drained)
    assert still is not None and still.status is RunStatus.QUEUED


async def test_a_run_that_suspends_past_its_limit_runs_to_its_end(db_url: str) -> None:
    """ctx.sleep and ctx.wait give the lease back, and the run is queued again, unstarted by
    its attempt count; it resumes however long after its start_within it is woken."""
    app = Corral(db_url)

    @app.agent("sleeper")
    async def sleeper(ctx: RunContext, input: Any) -> str:
        await ctx.sleep(0.6)
        return "woke"

    @app.agent("slow")
    async def slow(ctx: RunContext, input: Any) -> str:
        await asyncio.sleep(0.6)
        return "done"

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> Any:
        child = await ctx.spawn("slow")
        return await ctx.wait(child)

    async with app:
        ids = [await app.submit(agent, start_within=0.2) for agent in ("sleeper", "parent")]
        ended = await work_until_all_ended(app, ids, timeout=20)
    assert [(r.status, r.result) for r in ended] == [
        (RunStatus.SUCCEEDED, "woke"),
        (RunStatus.SUCCEEDED, ["done"]),
    ]


async def test_stores_looking_at_once_end_each_run_once(db_url: str, clock: FakeClock) -> None:
    stores = [create_store(db_url, StoreConfig(), clock) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        specs = [RunSpec("answer", i, tenant=f"t{i % 4}", start_within=1) for i in range(40)]
        await stores[0].submit(specs)
        clock.now += 2
        ended = await asyncio.gather(*(s.expire_overdue(limit=7) for s in stores for _ in range(3)))
        ended_more = await stores[0].expire_overdue()
        assert sum(ended) + ended_more == 40
        stats = await stores[0].stats()
        assert stats.queued == 0 and stats.by_status.get("failed") == 40
        assert all((t.queued, t.failed) == (0, 10) for t in stats.tenants if t.tenant != "default")
    finally:
        for s in stores:
            await s.close()


async def test_a_worker_ends_a_run_past_its_limit_while_its_slots_are_busy(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expiry, "EXPIRY_INTERVAL", 0.1)
    calls: list[Any] = []
    app = build(db_url, calls)
    release = asyncio.Event()

    @app.agent("busy")
    async def busy(ctx: RunContext, input: Any) -> Any:
        await release.wait()
        return input

    async with app:
        holder = await app.submit("busy", "hold")
        worker = app.worker(concurrency=1, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        try:
            for _ in range(100):  # the only slot taken
                if (await app.stats()).in_flight == 1:
                    break
                await asyncio.sleep(0.05)
            late = await app.submit("answer", "late", start_within=0.2)
            expired = await app.wait(late, timeout=10)
            assert expired.status is RunStatus.FAILED and expired.attempts == 0
            assert expired.error["type"] == "RunExpired"
            held = await app.get(holder)
            assert held is not None and held.status is RunStatus.RUNNING  # ended meanwhile
        finally:
            release.set()
            worker.stop()
            await running
    assert calls == []
