"""Durable execution (journaled steps, replay, spawn/wait, sleep, fan-out limits, budgets) with
an in-process worker, on every backend."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any

import pytest

from corral import (
    BudgetExceeded,
    ChildRunFailed,
    Corral,
    FanoutLimitError,
    InvalidInput,
    NonRetryableError,
    RunContext,
    StepFailed,
    StepPolicy,
)
from corral.models import RunStatus
from corral.store.user_sql import StepTransaction

pytestmark = pytest.mark.timeout(60)


async def drain(app: Corral, concurrency: int = 8) -> None:
    """Run one in-process worker until nothing is queued, running or waiting."""
    worker = app.worker(concurrency=concurrency, poll_interval=0.02, retry_base=0.0)
    await asyncio.wait_for(worker.run(until_idle=True), 45)


async def test_completed_steps_are_not_executed_again(db_url: str) -> None:
    app = Corral(db_url)
    calls: Counter[str] = Counter()

    def side_effect(name: str) -> str:
        calls[name] += 1
        return name.upper()

    @app.agent("flaky")
    async def flaky(ctx: RunContext, input: Any) -> list[str]:
        a = await ctx.step("a", side_effect, "a")
        b = await ctx.step("b", side_effect, "b")
        if ctx.attempt < 3:
            raise RuntimeError("crash after two steps")
        c = await ctx.step("c", side_effect, "c")
        return [a, b, c]

    async with app:
        run_id = await app.submit("flaky", max_attempts=3)
        await drain(app)
        run = await app.get(run_id)
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 3
    assert run.result == ["A", "B", "C"]
    assert calls == {"a": 1, "b": 1, "c": 1}


async def test_non_determinism_is_reported_readably(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("shifty")
    async def shifty(ctx: RunContext, input: Any) -> None:
        await ctx.step("fetch" if ctx.attempt == 1 else "search", lambda: 1)
        if ctx.attempt == 1:
            raise RuntimeError("retry me")

    async with app:
        run_id = await app.submit("shifty", max_attempts=3)
        await drain(app)
        run = await app.get(run_id)
    assert run.status == RunStatus.FAILED
    assert run.error["type"] == "NonDeterminismError"
    assert "'search'" in run.error["message"] and "'fetch'" in run.error["message"]
    assert run.attempts == 2  # non-determinism is not retried


async def test_concurrent_calls_replay_in_the_order_they_were_made(db_url: str) -> None:
    """Calls made at once (asyncio.gather) are journaled in call order, not the order they
    end in: replay answers them by position, and read in end order a redelivery failed with
    NonDeterminismError, or, for steps of one name, swapped their results."""
    app = Corral(db_url)
    calls: Counter[str] = Counter()

    async def fetch(page: str, seconds: float) -> str:
        calls[page] += 1
        await asyncio.sleep(seconds)
        return f"<{page}>"

    @app.agent("gatherer")
    async def gatherer(ctx: RunContext, input: Any) -> list[Any]:
        named = await asyncio.gather(
            ctx.step("slow", fetch, "slow", 0.3), ctx.step("fast", fetch, "fast", 0.0)
        )
        pages = await asyncio.gather(
            *(ctx.step("page", fetch, page, delay) for page, delay in (("p1", 0.2), ("p2", 0)))
        )
        seq = await asyncio.gather(ctx.emit("late", {"n": 1}), ctx.emit("early", {"n": 2}))
        if ctx.attempt == 1:
            raise RuntimeError("crash after the gathered calls")
        return [named, pages, seq[0] < seq[1]]

    async with app:
        run_id = await app.submit("gatherer", max_attempts=2)
        await drain(app)
        run = await app.get(run_id)
        journal = [(e.kind, e.name) for e in await app.journal(run_id)]
    assert run.status == RunStatus.SUCCEEDED and run.attempts == 2, run.error
    assert run.result == [["<slow>", "<fast>"], ["<p1>", "<p2>"], True]
    assert calls == {"slow": 1, "fast": 1, "p1": 1, "p2": 1}  # replayed, not run again
    made = [e for e in journal if e[0] in ("step", "event")]
    assert made == [
        ("step", "slow"),
        ("step", "fast"),
        ("step", "page"),
        ("step", "page"),
        ("event", "late"),
        ("event", "early"),
    ]


async def test_steps_of_any_callable_and_a_result_that_cannot_be_journaled(db_url: str) -> None:
    app = Corral(db_url)

    async def double(x: int) -> int:
        return 2 * x

    class Tripler:
        async def __call__(self, x: int) -> int:
            return 3 * x

    @app.agent("callables")
    async def callables(ctx: RunContext, input: Any) -> list[int]:
        # not async def functions, but each returns a coroutine: awaited, not journaled raw
        return [
            await ctx.step("lambda", lambda: double(5)),
            await ctx.step("object", Tripler(), 5),
        ]

    @app.agent("unjournaled")
    async def unjournaled(ctx: RunContext, input: Any) -> Any:
        return await ctx.step("tags", lambda: {"a", "b"})

    async with app:
        ok = await app.submit("callables")
        bad = await app.submit("unjournaled")
        await drain(app)
        good, refused = await app.get(ok), await app.get(bad)
    assert good.status == RunStatus.SUCCEEDED and good.result == [10, 15], good.error
    assert refused.status == RunStatus.FAILED and refused.attempts == 1  # not retried
    assert "step 'tags''s result is not a JSON value" in refused.error["message"]


async def test_a_key_that_is_not_a_string_fails_the_run_naming_where_it_is(db_url: str) -> None:
    """json.dumps writes the key 1 as "1": a step that returned {1: "a"} was given back
    as {"1": "a"}, and {1: "a", "1": "b"} was journaled as an object with one key twice."""
    app = Corral(db_url)

    async def write(tx: StepTransaction) -> Any:
        await tx.execute("CREATE TABLE IF NOT EXISTS keyed_effects (n INTEGER)")
        await tx.execute("INSERT INTO keyed_effects (n) VALUES (1)")
        return {"by_id": {7: "seven"}}

    async def count(tx: StepTransaction) -> int:
        await tx.execute("CREATE TABLE IF NOT EXISTS keyed_effects (n INTEGER)")
        row = await tx.fetchone("SELECT count(*) FROM keyed_effects")
        return -1 if row is None else int(row[0])

    @app.agent("stepped")
    async def stepped(ctx: RunContext, input: Any) -> Any:
        return await ctx.step("tally", lambda: {"by_id": {1: "a", "1": "b"}})

    @app.agent("emitted")
    async def emitted(ctx: RunContext, input: Any) -> Any:
        return await ctx.emit("tally", [{None: 1}])

    @app.agent("spawner")
    async def spawner(ctx: RunContext, input: Any) -> Any:
        return await ctx.spawn("stepped", {True: 1})

    @app.agent("transacted")
    async def transacted(ctx: RunContext, input: Any) -> Any:
        return await ctx.transaction("write", write)

    @app.agent("returned")
    async def returned(ctx: RunContext, input: Any) -> Any:
        return {"ok": {2.5: "x"}}

    @app.agent("counter")
    async def counter(ctx: RunContext, input: Any) -> Any:
        return await ctx.transaction("count", count)

    refusals = {
        "stepped": "step 'tally''s result is not a JSON value: the key 1 at ['by_id'][1]",
        "emitted": "event 'tally''s data is not a JSON value: the key None at [0][None]",
        "spawner": "a child's input is not a JSON value: the key True at [True]",
        "transacted": "step 'write''s result is not a JSON value: the key 7 at ['by_id'][7]",
        "returned": "the agent's result is not a JSON value: the key 2.5 at ['ok'][2.5]",
    }
    async with app:
        ids = {name: await app.submit(name) for name in refusals}
        await drain(app)
        runs = {name: await app.get(run_id) for name, run_id in ids.items()}
        counted = await app.submit("counter")
        await drain(app)
        journals = {name: await app.journal(run_id) for name, run_id in ids.items()}
        assert len(await app.list_runs(agent="stepped")) == 1  # the child was not spawned
        assert (await app.get(counted)).result == 0  # the refused step's insert rolled back
    for name, message in refusals.items():
        run = runs[name]
        assert run.status == RunStatus.FAILED and run.attempts == 1, (name, run.error)
        assert message in run.error["message"], (name, run.error)
        assert "not a string" in run.error["message"]
        assert [e.kind for e in journals[name] if e.kind in ("step", "event", "spawn")] == []


async def test_blocking_steps_get_a_thread_per_slot(db_url: str) -> None:
    """On the event loop's default pool (min(32, CPUs + 4) threads) half of these steps
    waited for a thread, and their step timeouts ran out while they waited."""
    app = Corral(db_url)

    @app.agent("blocking")
    async def blocking(ctx: RunContext, input: Any) -> str:
        await ctx.step("io", time.sleep, 0.5, policy=StepPolicy(timeout=0.9))
        return "ok"

    slots = 40  # above the default pool's largest size
    async with app:
        ids = await app.submit_many([{"agent": "blocking", "max_attempts": 1}] * slots)
        await drain(app, concurrency=slots)
        runs = [await app.get(run_id) for run_id in ids]
    assert [r.status for r in runs] == [RunStatus.SUCCEEDED] * slots, runs[-1].error


async def test_a_failure_up_a_tree_names_each_level_without_nesting_records(
    db_url: str,
) -> None:
    app = Corral(db_url)

    @app.agent("leaf")
    async def leaf(ctx: RunContext, input: Any) -> None:
        raise NonRetryableError("the page is gone")

    @app.agent("middle")
    async def middle(ctx: RunContext, input: Any) -> Any:
        return await ctx.wait(await ctx.spawn("leaf", max_attempts=1))

    @app.agent("top")
    async def top(ctx: RunContext, input: Any) -> Any:
        return await ctx.wait(await ctx.spawn("middle", max_attempts=1))

    async with app:
        run_id = await app.submit("top", max_attempts=1)
        await drain(app)
        run = await app.get(run_id)
    message = run.error["message"]
    assert run.status == RunStatus.FAILED and "NonRetryableError: the page is gone" in message
    assert "ChildRunFailed: child run" in message  # the middle level, by type and message
    assert "Traceback" not in message and len(message) < 400


async def test_step_failure_is_recorded_and_replayed(db_url: str) -> None:
    app = Corral(db_url)
    calls = Counter[str]()

    async def refuse() -> None:
        calls["refuse"] += 1
        raise NonRetryableError("the document is empty")

    async def wobbly() -> str:
        calls["wobbly"] += 1
        if calls["wobbly"] < 3:
            raise ConnectionError("try again")
        return "ok"

    async def slow() -> None:
        await asyncio.sleep(10)

    @app.agent("steps")
    async def steps(ctx: RunContext, input: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            await ctx.step("refuse", refuse)
        except StepFailed as exc:
            out["refused"] = exc.error["message"]
        out["wobbly"] = await ctx.step("wobbly", wobbly, policy=StepPolicy(retries=3, backoff=0))
        try:
            await ctx.step(
                "slow", slow, policy=StepPolicy(timeout=0.05, give_up_on=(TimeoutError,))
            )
        except StepFailed as exc:
            out["slow"] = exc.error["type"]
        if ctx.attempt == 1:
            raise RuntimeError("replay everything")
        return out

    async with app:
        run_id = await app.submit("steps", max_attempts=2)
        await drain(app)
        run = await app.get(run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == {
        "refused": "the document is empty",
        "wobbly": "ok",
        "slow": "TimeoutError",
    }
    assert calls == {"refuse": 1, "wobbly": 3}


async def test_events_are_journaled_once_and_readable_after_a_cursor(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("chatty")
    async def chatty(ctx: RunContext, input: Any) -> None:
        for i in range(3):
            await ctx.emit("token", {"i": i})
        if ctx.attempt == 1:
            raise RuntimeError("again")

    async with app:
        run_id = await app.submit("chatty", max_attempts=2)
        await drain(app)
        journal = await app.journal(run_id)
        later = await app.journal(run_id, after=journal[1].seq)
    events = [e for e in journal if e.kind == "event"]
    assert [e.data for e in events] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert [e.seq for e in journal] == sorted(e.seq for e in journal)
    assert later == journal[2:]


async def test_spawn_and_wait_suspends_the_parent(db_url: str) -> None:
    app = Corral(db_url)
    seen_waiting: list[str] = []

    @app.agent("square")
    async def square(ctx: RunContext, n: int) -> int:
        for _ in range(200):  # the parent reaches its wait and gives its slot back
            parent = await app.get(ctx.parent_id or "")
            if parent.status == "waiting":
                break
            await asyncio.sleep(0.025)
        seen_waiting.append(parent.status)
        if n == 3:
            raise NonRetryableError("three is unlucky")
        return n * n

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> dict[str, Any]:
        kids = [await ctx.spawn("square", n) for n in (1, 2, 3)]
        results = await ctx.wait(kids, return_exceptions=True)
        try:
            await ctx.wait(kids[2])
        except ChildRunFailed as exc:
            failed = exc.status
        return {"ok": [r for r in results if not isinstance(r, Exception)], "failed": failed}

    async with app:
        run_id = await app.submit("parent")
        await drain(app)
        run = await app.get(run_id)
        journal = await app.journal(run_id)
        children = await app.list_runs(agent="square")
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == {"ok": [1, 4], "failed": "failed"}
    assert {c.parent_id for c in children} == {run_id} and {c.depth for c in children} == {1}
    assert "waiting" in seen_waiting  # the parent gave its slot back while children ran
    assert [e.name for e in journal if e.kind == "suspended"] == ["wait"]


async def test_waiting_for_the_same_child_twice_waits_once(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> str:
        for _ in range(400):  # ends only once the parent suspended on it
            if (await app.get(ctx.parent_id or "")).status == "waiting":
                break
            await asyncio.sleep(0.025)
        return "done"

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> list[Any]:
        kid = await ctx.spawn("child")
        return await ctx.wait(kid, kid)

    async with app:
        run_id = await app.submit("parent")
        await drain(app)
        run = await app.get(run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == ["done", "done"]


async def test_tenant_cap_one_fan_out_does_not_deadlock(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("leaf")
    async def leaf(ctx: RunContext, n: int) -> int:
        return n + 1

    @app.agent("fan")
    async def fan(ctx: RunContext, input: Any) -> int:
        kids = await ctx.spawn_many([{"agent": "leaf", "input": n} for n in range(8)])
        return sum(await ctx.wait(kids))

    async with app:
        await app.set_tenant("solo", cap=1)
        run_id = await app.submit("fan", tenant="solo")
        await drain(app, concurrency=4)
        run = await app.get(run_id)
    assert run.status == RunStatus.SUCCEEDED and run.result == sum(range(1, 9))


async def test_recursive_planner_stops_at_fan_out_limits(db_url: str) -> None:
    app = Corral(db_url, max_children=4, max_depth=2)
    refusals: set[tuple[str, str]] = set()

    @app.agent("planner")
    async def planner(ctx: RunContext, input: Any) -> int:
        kids: list[str] = []
        try:
            for _ in range(200):
                kids.append(await ctx.spawn("planner"))
        except FanoutLimitError as exc:
            refusals.add((ctx.run_id, "depth" if "depth" in str(exc) else "children"))
        return 1 + sum(await ctx.wait(kids)) if kids else 1

    async with app:
        run_id = await app.submit("planner")
        await drain(app)
        run = await app.get(run_id)
        total = len(await app.list_runs(limit=1000))
    assert run.status == RunStatus.SUCCEEDED
    assert total == 1 + 4 + 16 == run.result
    assert Counter(kind for _, kind in refusals) == {"children": 5, "depth": 16}


async def test_budget_is_charged_to_the_root_and_never_overspent(db_url: str) -> None:
    app = Corral(db_url)

    @app.agent("worker")
    async def worker(ctx: RunContext, cost: float) -> str:
        try:
            await ctx.charge(cost, reason="tokens")
        except BudgetExceeded:
            return "refused"
        return "charged"

    @app.agent("boss")
    async def boss(ctx: RunContext, input: Any) -> dict[str, Any]:
        await ctx.charge(2, reason="planning")
        try:
            await ctx.spawn("worker", 1, budget=100)
        except BudgetExceeded:
            sub_limit = "refused"
        kids = await ctx.spawn_many([{"agent": "worker", "input": 3} for _ in range(4)])
        return {"sub_limit": sub_limit, "kids": await ctx.wait(kids)}

    async with app:
        run_id = await app.submit("boss", budget=10)
        await drain(app)
        run = await app.get(run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result["sub_limit"] == "refused"
    assert sorted(run.result["kids"]) == ["charged", "charged", "refused", "refused"]
    assert run.spent == 8 and run.budget_remaining == 2


async def test_cancelling_a_parent_cancels_its_descendants(db_url: str) -> None:
    app = Corral(db_url)
    started = asyncio.Event()

    @app.agent("nap")
    async def nap(ctx: RunContext, input: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    @app.agent("tree")
    async def tree(ctx: RunContext, input: Any) -> None:
        await ctx.wait(await ctx.spawn_many([{"agent": "nap"} for _ in range(3)]))

    async with app:
        run_id = await app.submit("tree")
        worker = app.worker(concurrency=4, poll_interval=0.02, lease_ttl=0.6)
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 10)
        await app.cancel(run_id)
        for _ in range(100):
            runs = await app.list_runs()
            if all(r.done for r in runs):
                break
            await asyncio.sleep(0.05)
        worker.stop()
        await task
    assert {r.status for r in runs} == {RunStatus.CANCELLED} and len(runs) == 4, [
        (r.agent, r.status, r.error, r.attempts, r.cancel_requested) for r in runs
    ]


async def test_cancelling_reaches_descendants_below_a_child_that_ended(db_url: str) -> None:
    """A fire-and-forget child can end before its own children do: cancelling the root must
    still reach them (they drew on the root's budget and kept the tree from being purged)."""
    app = Corral(db_url)
    grandchildren: list[str] = []

    @app.agent("root")
    async def root(ctx: RunContext, input: Any) -> None:
        await ctx.wait(await ctx.spawn("child"))
        await ctx.sleep(3600)

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> str:
        grandchildren.append(await ctx.spawn("grandchild"))
        return "done"  # does not wait for its own child

    @app.agent("grandchild")
    async def grandchild(ctx: RunContext, input: Any) -> None:
        await ctx.sleep(3600)

    async with app:
        root_id = await app.submit("root")
        worker = app.worker(concurrency=4, poll_interval=0.02)
        task = asyncio.create_task(worker.run())
        try:
            for _ in range(400):
                stats = await app.stats()
                if stats.waiting == 2 and stats.queued == 0 and stats.in_flight == 0:
                    break  # root and grandchild asleep, the child ended
                await asyncio.sleep(0.025)
        finally:
            worker.stop()
            await task
        await app.cancel(root_id)
        runs = {r.agent: r.status for r in await app.list_runs()}
    assert runs == {
        "root": RunStatus.CANCELLED,
        "child": RunStatus.SUCCEEDED,
        "grandchild": RunStatus.CANCELLED,
    }


async def test_a_run_waits_only_for_its_own_children(db_url: str) -> None:
    """Only a run's own children wake it (a wait on any other run never ended), and another
    tree's run may be another tenant's (its result must not leak)."""
    app = Corral(db_url)

    @app.agent("secret")
    async def secret(ctx: RunContext, input: Any) -> str:
        return "acme's secret"

    @app.agent("waiter")
    async def waiter(ctx: RunContext, other: str) -> Any:
        return await ctx.wait(other)

    async with app:
        theirs = await app.submit("secret", tenant="acme")
        await drain(app)
        mine = await app.submit("waiter", theirs, tenant="globex")
        await drain(app)
        run = await app.get(mine)
    assert run.status == RunStatus.FAILED and run.attempts == 1, run.error
    assert run.error["type"] == "InvalidInput"
    assert "is not a child of run" in run.error["message"]
    assert run.result is None


async def test_amounts_that_are_not_finite_are_refused(db_url: str) -> None:
    """NaN passed every '< 0' check: a NaN sleep never came due, a NaN charge was NULL on
    SQLite and NaN on PostgreSQL, an infinite one was taken."""
    app = Corral(db_url)
    refused: list[str] = []

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> None:
        return None

    @app.agent("odd")
    async def odd(ctx: RunContext, input: Any) -> float | None:
        calls = (
            lambda: ctx.sleep(math.nan),
            lambda: ctx.sleep(math.inf),
            lambda: ctx.charge(math.nan),
            lambda: ctx.charge(math.inf),
            lambda: ctx.charge(1, reason="tok\x00ens"),
            lambda: ctx.spawn_many([{"agent": "child", "budget": math.nan}]),
        )
        for call in calls:
            try:
                await call()
            except InvalidInput as exc:
                refused.append(str(exc))
        return await ctx.charge(2.5, reason="tokens")

    async with app:
        run_id = await app.submit("odd", budget=10)
        await drain(app)
        run = await app.get(run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == 7.5 and run.spent == 2.5
    assert len(refused) == 6, refused
    assert "must be a finite number >= 0" in refused[0]
    assert "must not contain NUL" in refused[4]


async def test_durable_sleep_fires_once(db_url: str) -> None:
    app = Corral(db_url)
    wakes: list[int] = []

    @app.agent("napper")
    async def napper(ctx: RunContext, input: Any) -> str:
        await ctx.emit("before")
        await ctx.sleep(0.3)
        wakes.append(ctx.attempt)
        return "rested"

    async with app:
        run_id = await app.submit("napper")
        await drain(app)
        run = await app.get(run_id)
        journal = await app.journal(run_id)
    assert run.status == RunStatus.SUCCEEDED and wakes == [1]
    assert run.finished_at is not None and run.finished_at - run.created_at >= 0.3
    assert [e.name for e in journal if e.kind == "event"] == ["before"]


async def test_spawn_refuses_child_settings_no_store_could_keep(db_url: str) -> None:
    app = Corral(db_url)
    refused: list[str] = []

    @app.agent("child")
    async def child(ctx: RunContext, input: Any) -> None:
        return None

    @app.agent("parent")
    async def parent(ctx: RunContext, input: Any) -> int:
        for settings in ({"priority": 10**12}, {"max_attempts": 2**40}, {"priority": True}):
            try:
                await ctx.spawn_many([{"agent": "child", **settings}])
            except InvalidInput as exc:
                refused.append(str(exc))
        return len(await ctx.spawn_many([{"agent": "child", "max_attempts": 5}]))

    async with app:
        run_id = await app.submit("parent")
        await drain(app)
        run = await app.get(run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result == 1
    assert len(refused) == 3 and "priority must be an integer" in refused[0]
    assert "max_attempts must be at most" in refused[1]
