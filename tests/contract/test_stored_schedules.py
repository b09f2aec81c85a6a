"""Schedules created at run time: stored with their definition, named per tenant, limited per
tenant, started at the tick after their creation, submitted by any worker that reads them,
and ended by their deletion even for a worker that read them before."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import pytest

from corral import (
    Corral,
    InvalidInput,
    RunContext,
    ScheduleExists,
    ScheduleLimitReached,
    ScheduleNotFound,
    UnknownAgent,
)
from corral.clock import FakeClock
from corral.config import StoreConfig
from corral.dispatch.schedule import Schedule, decode_definition, encode_definition
from corral.models import RunSpec
from corral.store import Store
from corral.worker import schedules as schedules_module
from corral.worker.schedules import schedule_loop
from tests.support.postgres import fresh_schema

pytestmark = pytest.mark.timeout(60)


def build(db_url: str, clock: FakeClock | None = None, **config: Any) -> Corral:
    app = Corral(db_url, config=StoreConfig(**config), **({"clock": clock} if clock else {}))

    @app.agent("digest")
    async def digest(ctx: RunContext, input: Any) -> Any:
        return input

    return app


async def test_a_created_schedule_is_stored_whole_and_named_within_its_tenant(
    db_url: str, clock: FakeClock
) -> None:
    clock.now = 1000.0
    async with build(db_url, clock) as app:
        made = await app.create_schedule(
            "nightly",
            "digest",
            {"list": [1, 2.5, "x"]},
            cron="0 3 * * *",
            tz="Europe/Berlin",
            tenant="acme",
            priority=5,
            max_attempts=7,
            timeout=30,
            start_within=600,
            catch_up=120,
        )
        assert made.name == "acme/nightly"
        [stored] = await app.store.stored_schedules()
        assert stored == made and stored.definition == made.definition
        assert (stored.run.tenant, stored.run.priority, stored.run.max_attempts) == ("acme", 5, 7)
        assert (stored.run.timeout, stored.run.start_within, stored.catch_up) == (30, 600, 120)
        assert stored.when == "cron '0 3 * * *' (Europe/Berlin)"
        # the name is the tenant's own: another tenant may use it, the same one may not
        await app.create_schedule("nightly", "digest", every=60, tenant="globex")
        with pytest.raises(ScheduleExists):
            await app.create_schedule("nightly", "digest", every=60, tenant="acme")
        assert [s.name for s in await app.store.stored_schedules("globex")] == ["globex/nightly"]
        # created, not yet ticked: it starts at its latest tick, without a run
        ticks = await app.store.schedule_ticks()
        assert ticks["globex/nightly"] == (960.0, None)
        assert list(await app.store.schedule_ticks("globex")) == ["globex/nightly"]
        assert await app.store.schedule_ticks(code_only=True) == {}
        states = {st.schedule.name: st for st in await app.schedule_states(tenant="globex")}
        assert list(states) == ["globex/nightly"]
        assert states["globex/nightly"].next_tick == 1020.0


async def test_a_stored_tick_gets_one_run_and_a_deleted_or_replaced_schedule_none(
    store: Store, db_url: str, clock: FakeClock
) -> None:
    clock.now = 100.0
    async with build(db_url, clock) as app:
        old = await app.create_schedule("often", "digest", {"v": 1}, every=10, tenant="acme")
        run_id = await store.submit_scheduled(old.name, 110.0, old.run, definition=old.definition)
        assert run_id is not None
        assert (
            await store.submit_scheduled(old.name, 110.0, old.run, definition=old.definition)
            is None
        )  # taken
        # replaced: a worker still holding the old definition gets no run
        await app.delete_schedule("often", tenant="acme")
        new = await app.create_schedule("often", "digest", {"v": 2}, every=10, tenant="acme")
        assert (
            await store.submit_scheduled(old.name, 120.0, old.run, definition=old.definition)
            is None
        )
        # nor moves it on by skipping a tick of the schedule it read
        await store.submit_scheduled(old.name, 120.0, old.run, run=False, definition=old.definition)
        assert (await store.schedule_ticks())["acme/often"] == (100.0, None)
        fresh = await store.submit_scheduled(new.name, 120.0, new.run, definition=new.definition)
        assert fresh is not None
        run = await store.get(fresh)
        assert run is not None and (run.input, run.tenant) == ({"v": 2}, "acme")
        # deleted: no row comes back for a stale worker's tick, and no run
        await app.delete_schedule("often", tenant="acme")
        assert (
            await store.submit_scheduled(new.name, 130.0, new.run, definition=new.definition)
            is None
        )
        assert (
            await store.submit_scheduled(
                new.name, 140.0, new.run, run=False, definition=new.definition
            )
            is None
        )
        assert "acme/often" not in await store.schedule_ticks()
        assert (await store.stats()).queued == 2
        with pytest.raises(ScheduleNotFound):
            await app.delete_schedule("often", tenant="acme")


async def test_a_paused_schedule_gets_no_run_and_resumes_without_making_up(
    store: Store, db_url: str, clock: FakeClock
) -> None:
    clock.now = 100.0
    async with build(db_url, clock) as app:
        made = await app.create_schedule("often", "digest", every=10, tenant="acme")
        clock.now = 101.0
        await app.pause_schedule("often", tenant="acme")
        clock.now = 102.0
        await app.pause_schedule("often", tenant="acme")  # again: paused since the first
        [paused] = await store.stored_schedules()
        assert paused.paused_at == 101.0
        [state] = await app.schedule_states()
        assert state.schedule.paused_at == 101.0
        # a worker that read it before the pause gets no run for its ticks
        assert (
            await store.submit_scheduled(made.name, 110.0, made.run, definition=made.definition)
            is None
        )
        clock.now = 135.0
        await app.resume_schedule("often", tenant="acme")
        assert (await store.stored_schedules())[0].paused_at is None
        # resumed at its latest tick: the ticks it was paused through get no run
        assert (await store.schedule_ticks())["acme/often"] == (130.0, None)
        assert (
            await store.submit_scheduled(made.name, 130.0, made.run, definition=made.definition)
            is None
        )
        assert (
            await store.submit_scheduled(made.name, 140.0, made.run, definition=made.definition)
            is not None
        )
        # resuming a schedule that runs changes nothing
        clock.now = 175.0
        await app.resume_schedule("often", tenant="acme")
        assert (await store.schedule_ticks())["acme/often"] == (140.0, 140.0)
        for verb in (app.pause_schedule, app.resume_schedule, app.delete_schedule):
            with pytest.raises(ScheduleNotFound):
                await verb("often", tenant="globex")
        assert (await store.stats()).queued == 1


async def test_a_worker_reads_only_the_schedules_due_soon(
    store: Store, db_url: str, clock: FakeClock
) -> None:
    clock.now = 1000.0
    async with build(db_url, clock) as app:
        often = await app.create_schedule("often", "digest", every=60, tenant="acme")
        await app.create_schedule("hourly", "digest", cron="0 * * * *", tenant="acme")
        await app.create_schedule("held", "digest", every=60, tenant="acme")
        await app.pause_schedule("held", tenant="acme")

        async def due(until: float) -> list[str]:
            return [s.name for s in await store.due_schedules(until)]

        assert await due(1019.0) == []
        assert await due(1020.0) == ["acme/often"]
        assert await due(4000.0) == ["acme/often", "acme/hourly"]  # paused: never due
        # a claimed tick moves the schedule to its next one
        assert await store.submit_scheduled(
            often.name, 1020.0, often.run, definition=often.definition
        )
        assert await due(1079.0) == [] and await due(1080.0) == ["acme/often"]
        # so does a skipped one
        await store.submit_scheduled(
            often.name, 1140.0, often.run, run=False, definition=often.definition
        )
        assert await due(1199.0) == [] and await due(1200.0) == ["acme/often"]
        clock.now = 1300.0
        await app.resume_schedule("held", tenant="acme")
        assert await due(1320.0) == ["acme/often", "acme/held"]


async def test_a_tenant_has_at_most_its_limit_of_schedules(db_url: str) -> None:
    async with build(db_url, max_schedules_per_tenant=2) as app:
        await app.create_schedule("a", "digest", every=60, tenant="acme")
        await app.create_schedule("b", "digest", every=60, tenant="acme")
        with pytest.raises(ScheduleLimitReached) as refused:
            await app.create_schedule("c", "digest", every=60, tenant="acme")
        assert refused.value.code == "schedule_limit"
        await app.create_schedule("c", "digest", every=60, tenant="globex")  # its own limit
        await app.delete_schedule("a", tenant="acme")
        await app.create_schedule("c", "digest", every=60, tenant="acme")
        names = [s.name for s in await app.store.stored_schedules()]
        assert names == ["acme/b", "acme/c", "globex/c"]
        # schedules declared in code do not count and cannot be deleted as stored ones
        assert not await app.store.delete_schedule("declared")


async def test_concurrent_creates_cannot_pass_the_limit(db_url: str) -> None:
    apps = [build(db_url, max_schedules_per_tenant=3) for _ in range(3)]
    for app in apps:
        await app.open()
    try:

        async def create(i: int) -> bool:
            try:
                await apps[i % 3].create_schedule(f"s{i}", "digest", every=60, tenant="acme")
            except ScheduleLimitReached:
                return False
            return True

        made = await asyncio.gather(*(create(i) for i in range(9)))
        assert sum(made) == 3
        assert len(await apps[0].store.stored_schedules("acme")) == 3
    finally:
        for app in apps:
            await app.close()


async def test_what_create_schedule_refuses_leaves_nothing_behind(db_url: str) -> None:
    async with build(db_url) as app:
        refusals: list[dict[str, Any]] = [
            {"name": "a/b", "every": 60},
            {"name": "", "every": 60},
            {"name": "x", "cron": "61 * * * *"},
            {"name": "x", "every": 0.5},
            {"name": "x", "every": 60, "tz": "Mars/Olympus"},
            {"name": "x", "cron": "0 9 * * *", "tz": "localtime"},
            {"name": "x", "cron": "* * * * *", "every": 60},
            {"name": "x", "every": 60, "priority": "high"},
            {"name": "x", "every": 60, "tenant": ""},
        ]
        for args in refusals:
            with pytest.raises(InvalidInput):
                await app.create_schedule(agent="digest", **args)
        with pytest.raises(UnknownAgent):
            await app.create_schedule("x", "nope", every=60)
        assert await app.store.stored_schedules() == []
        assert await app.store.schedule_ticks() == {}


async def test_a_name_no_url_can_reach_is_refused_and_one_stored_before_stays_deletable(
    db_url: str,
) -> None:
    """The dot segments "." and ".." in a URL path mean this path and its parent: clients
    and proxies sent GET /v1/schedules/.. as GET /v1, so such a schedule could not be read,
    paused or deleted over HTTP."""
    async with build(db_url) as app:
        for name in (".", ".."):
            refusal = re.escape(f"schedule may not be '{name}': in a URL path")
            with pytest.raises(InvalidInput, match=refusal):
                await app.create_schedule(name, "digest", every=60, tenant="acme")
            with pytest.raises(InvalidInput, match=refusal):
                app.schedule(name, "digest", every=60)
        assert await app.store.stored_schedules() == [] and app.schedules == {}
        await app.create_schedule("...", "digest", every=60, tenant="acme")  # no dot segment
        # one stored before the rule (its row written as create_schedule wrote it then)
        legacy = Schedule("acme/..", RunSpec("digest", tenant="acme"), every=60)
        await app.store.create_schedule(replace(legacy, definition=encode_definition(legacy)))
        await app.pause_schedule("..", tenant="acme")
        await app.delete_schedule("..", tenant="acme")
        assert [s.name for s in await app.store.stored_schedules()] == ["acme/..."]


def _loads(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@pytest.mark.skipif(
    not _loads("localtime"), reason="no zone file 'localtime' here: no schedule was stored in it"
)
async def test_a_schedule_stored_in_localtime_before_the_rule_is_still_read(
    db_url: str, clock: FakeClock
) -> None:
    """create_schedule refuses the machine's own zone now; a row written before keeps
    working as it did, rather than making every read of the stored schedules fail."""
    clock.now = 1000.0
    async with build(db_url, clock) as app:
        legacy = Schedule(
            "acme/local", RunSpec("digest", tenant="acme"), cron="0 9 * * *", tz="localtime"
        )
        await app.store.create_schedule(replace(legacy, definition=encode_definition(legacy)))
        await app.create_schedule("utc", "digest", cron="0 9 * * *", tenant="acme")
        due = await app.store.due_schedules(clock.now + 86_400)
        assert sorted(s.name for s in due) == ["acme/local", "acme/utc"]
        assert [st.schedule.tz for st in await app.schedule_states("acme")] == [
            "localtime",
            "UTC",
        ]


def test_a_definition_reads_back_as_the_schedule_it_was_written_from() -> None:
    app = Corral("sqlite:///:memory:")
    made = app.schedule("s", "digest", {"a": [1, None, True]}, every=90.5, timeout=2)
    text = encode_definition(made)
    back = decode_definition("t/s", "default", text)
    assert back.run == made.run and back.every == 90.5 and back.cron is None
    assert encode_definition(back) == text


async def test_the_schedule_loop_picks_up_created_schedules_and_drops_deleted_ones(
    db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedules_module, "MAX_SLEEP", 0.02)  # the fake clock does not sleep
    clock.now = 1005.0
    async with build(db_url, clock) as app:
        loop = asyncio.create_task(schedule_loop(app.store, [], stored=True))
        try:
            await asyncio.sleep(0.1)  # the loop's first read: nothing stored yet
            await app.create_schedule("tick", "digest", every=10, tenant="acme")
            # the next tick, after the loop's next read of the stored schedules
            clock.now = 1011.0
            await _until(lambda: _queued(app), 1)
            clock.now = 1021.0
            await _until(lambda: _queued(app), 2)
            await app.delete_schedule("tick", tenant="acme")
            clock.now = 1031.0
            await asyncio.sleep(0.3)
            assert await _queued(app) == 2
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop


async def _queued(app: Corral) -> int:
    return (await app.stats()).queued


async def _until(read: Any, want: int, seconds: float = 4.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if await read() >= want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached {want}")


async def test_a_worker_runs_a_created_schedule_until_it_is_deleted(db_url: str) -> None:
    async with build(db_url) as app:
        await app.create_schedule("each-second", "digest", {"n": 1}, every=1, tenant="acme")
        worker = app.worker(concurrency=2, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        try:

            async def succeeded() -> int:
                return len(await app.list_runs(tenant="acme", status="succeeded"))

            await _until(succeeded, 2, seconds=10)
            await app.delete_schedule("each-second", tenant="acme")
            await asyncio.sleep(0.5)  # a run submitted just before the delete may still run
            total = len(await app.list_runs(tenant="acme"))
            await asyncio.sleep(2.2)
            assert len(await app.list_runs(tenant="acme")) == total
        finally:
            worker.stop()
            await running
        runs = await app.list_runs(tenant="acme")
        assert all(r.agent == "digest" and r.input == {"n": 1} for r in runs)


async def test_creating_a_taken_name_while_its_tick_is_claimed_waits_without_a_deadlock(
    pg_dsn: str,
) -> None:
    """A worker's tick batch locks a schedule's row (the claim) and then its tenant's row
    (the quota of the run it submits). A create of that same name must take the two in that
    order too: taking the tenant's first, it waited for the schedule's row while the batch
    waited for the tenant's, a deadlock PostgreSQL broke after a second by failing one."""
    with fresh_schema(pg_dsn) as dsn:
        async with build(dsn) as app:
            made = await app.create_schedule("nightly", "digest", every=60, tenant="acme")
            async with await psycopg.AsyncConnection.connect(dsn) as batch:
                await batch.execute("SET deadlock_timeout = '100ms'")
                # the batch's claim (claim_stored_tick), in a transaction left open
                await batch.execute(
                    "UPDATE corral_schedules SET last_tick = last_tick + 60 WHERE name = %s",
                    (made.name,),
                )
                create = asyncio.create_task(
                    app.create_schedule("nightly", "digest", every=60, tenant="acme")
                )
                await asyncio.sleep(0.3)  # the create now waits on the claimed row
                assert not create.done()
                # the batch's submit (reserve_queued): the tenant's row must be free
                await batch.execute(
                    "UPDATE corral_tenants SET queued = queued WHERE tenant = 'acme'"
                )
                await batch.commit()
                with pytest.raises(ScheduleExists):
                    await asyncio.wait_for(create, 5)


async def test_a_schedule_replaced_just_before_its_tick_gets_that_tick_from_the_loop(
    db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop still holding a replaced schedule's old definition offers its tick, which the
    store refuses (the row holds the new one). The loop noted that tick as decided for the
    name, so once it read the new definition it passed over the same tick: the new
    schedule's first tick got no run from any worker that read the old one."""
    monkeypatch.setattr(schedules_module, "MAX_SLEEP", 0.02)  # the fake clock does not sleep
    clock.now = 1006.0
    async with build(db_url, clock) as app:
        await app.create_schedule("tick", "digest", {"v": 1}, every=10, tenant="acme")
        loop = asyncio.create_task(schedule_loop(app.store, [], stored=True))
        try:
            await asyncio.sleep(0.1)  # the loop reads the old definition (next read at 1011)
            clock.now = 1007.0
            await app.delete_schedule("tick", tenant="acme")
            await app.create_schedule("tick", "digest", {"v": 2}, every=10, tenant="acme")
            clock.now = 1010.5  # the new schedule's first tick, before the loop's next read
            await asyncio.sleep(0.1)
            clock.now = 1012.0  # the loop reads the new definition: 2 s late, on time
            await _until(lambda: _queued(app), 1)
            [run] = await app.list_runs(tenant="acme")
            assert run.input == {"v": 2}
            assert (await app.store.schedule_ticks())["acme/tick"] == (1010.0, 1010.0)
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop


async def test_a_schedule_created_in_the_repeated_hour_of_a_fall_back_starts_at_its_latest_tick(
    store: Store, db_url: str, clock: FakeClock
) -> None:
    """Created at 01:10 EST on the night New York's clocks go back, "30 1 * * *" has ticked
    at 01:30 EDT, 40 minutes before. Its row started at the day before's tick instead, so
    with a catch_up of two hours a worker made up 01:30 EDT: a run for a tick before the
    schedule existed."""
    clock.now = 1_730_614_200.0  # 2024-11-03 06:10 UTC: 01:10 EST, the second 01:10
    async with build(db_url, clock) as app:
        made = await app.create_schedule(
            "night", "digest", cron="30 1 * * *", tz="America/New_York", catch_up=7200
        )
        edt_0130 = 1_730_611_800.0  # 05:30 UTC
        assert (await store.schedule_ticks())["default/night"] == (edt_0130, None)
        clock.now = edt_0130 + 3660  # 01:31 EST: the latest tick is 01:30 EDT, 61 min ago
        tick = made.latest_tick(clock.now)
        assert tick == edt_0130
        run = await store.submit_scheduled(made.name, tick, made.run, definition=made.definition)
        assert run is None and (await store.stats()).queued == 0


async def test_a_stored_schedule_this_machine_cannot_read_leaves_the_others_running(
    db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Machines differ in their tz database: a zone a newer one knows (as Europe/Kyiv, added
    in 2022) is no zone to an older one. A row in such a zone failed the whole read of the
    due schedules on the older machine's workers, so they ran no tenant's stored schedule."""
    clock.now = 1000.0
    async with build(db_url, clock) as app:
        other = Schedule("acme/other", RunSpec("digest", tenant="acme"), cron="* * * * *")
        # the row as a machine knowing the zone "Mars/Olympus" wrote it
        text = encode_definition(other).replace('"UTC"', '"Mars/Olympus"')
        await app.store.create_schedule(replace(other, definition=text))
        await app.create_schedule("mine", "digest", cron="* * * * *", tenant="globex")
        due = await app.store.due_schedules(clock.now + 60)
        assert [s.name for s in due] == ["globex/mine"]
        assert "acme/other" in caplog.text and "Mars/Olympus" in caplog.text
