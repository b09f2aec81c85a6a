"""Operations: the suggested worker count (a pure function), /v1/queues and /metrics (with a
contention scheduler exported), on both backends."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from corral import Corral
from corral.api import ApiSettings, TenantLoad, create_api, suggested_workers
from corral.contention import Scheduler, SharedResource
from corral.models import RunSpec
from tests.e2e.conftest import Keys, assert_error

H = Keys.header


def workers(*tenants: TenantLoad, **kw: object) -> int:
    options: dict[str, object] = {"age_target": 10.0, "slots_per_worker": 4, **kw}
    return suggested_workers(tenants, **options)  # type: ignore[arg-type]


def test_idle_queue_needs_min_workers() -> None:
    assert workers() == 0
    assert workers(TenantLoad(0, 0, None, 0.0), min_workers=2) == 2


def test_busy_slots_are_kept_and_a_fresh_backlog_asks_for_little() -> None:
    assert workers(TenantLoad(0, 9, None, 0.0)) == 3  # 9 busy slots / 4 per worker
    # 100 queued, oldest 1 s of a 10 s target: ceil(100 * 0.1) = 10 slots
    assert workers(TenantLoad(100, 0, None, 1.0)) == 3


def test_a_backlog_at_or_past_the_target_asks_for_a_slot_per_runnable_run() -> None:
    assert workers(TenantLoad(100, 0, None, 10.0)) == 25
    assert workers(TenantLoad(100, 0, None, 500.0)) == 25
    # grows with age between the two
    ages = [workers(TenantLoad(100, 0, None, a)) for a in (0.5, 2, 5, 8, 10)]
    assert ages == sorted(ages) and ages[0] < ages[-1]


def test_caps_bound_what_a_tenant_can_use() -> None:
    # cap 2, 1 in flight: only 1 more can start however deep the queue
    assert workers(TenantLoad(1000, 1, 2, 60.0)) == 1
    assert workers(TenantLoad(1000, 1, 2, 60.0), TenantLoad(10, 0, None, 60.0)) == 3
    assert workers(TenantLoad(1000, 0, None, 60.0), global_cap=8) == 2
    assert workers(TenantLoad(1000, 0, None, 60.0), max_workers=5) == 5


def test_work_queued_never_suggests_zero() -> None:
    assert workers(TenantLoad(3, 0, None, 0.0)) == 1
    assert workers(TenantLoad(3, 0, 5, 0.0), global_cap=None) == 1


async def test_queues_report_depth_age_in_flight_cap_and_suggestion(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    await corral_app.set_tenant("acme", cap=2)
    for _ in range(5):
        await client.post("/v1/runs", json={"agent": "echo"}, headers=H(keys.a))
    await asyncio.sleep(0.05)
    q = (await client.get("/v1/queues", headers=H(keys.a))).json()
    (acme,) = q["tenants"]
    assert (acme["tenant"], acme["queued"], acme["in_flight"], acme["cap"]) == ("acme", 5, 0, 2)
    assert acme["oldest_queued_age"] > 0
    assert q["age_target"] == 30.0 and q["slots_per_worker"] == 10
    assert q["suggested_workers"] == suggested_workers(
        [TenantLoad(5, 0, 2, acme["oldest_queued_age"])], age_target=30.0, slots_per_worker=10
    )
    assert q["suggested_workers"] == 1
    assert q["tenant"] == "acme"  # whose queue this is, even before it has any rows
    admin = (await client.get("/v1/queues", headers=H(keys.admin))).json()
    assert admin["tenant"] is None  # an admin key's: every tenant's


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"{name} {labels} not in metrics")


async def test_metrics_export_queue_figures_counters_histograms_and_schedulers(
    corral_app: Corral, keys: Keys, settings: ApiSettings
) -> None:
    resource = SharedResource("llm", capacity=1)
    scheduler = Scheduler(resource, max_waiters=10)
    api = create_api(corral_app, settings, schedulers={"llm": scheduler})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://corral.test"
    ) as client:
        ids = [
            (
                await client.post("/v1/runs", json={"agent": "echo", "input": i}, headers=H(keys.a))
            ).json()["run_id"]
            for i in range(4)
        ]
        await client.post("/v1/runs", json={"agent": "fail"}, headers=H(keys.b))
        await corral_app.set_tenant("globex", max_queued=1)
        assert (
            await client.post("/v1/runs", json={"agent": "echo"}, headers=H(keys.b))
        ).status_code == 429
        # a batch across tenants refused by one tenant's quota: counted for that tenant only
        mixed = {
            "runs": [{"agent": "echo", "tenant": "acme"}, {"agent": "echo", "tenant": "globex"}]
        }
        refused = await client.post("/v1/runs/batch", json=mixed, headers=H(keys.admin))
        assert refused.status_code == 429 and "'globex'" in refused.json()["error"]["message"]
        text = (await client.get("/metrics", headers=H(keys.admin))).text
        assert sample(text, "corral_queue_depth", tenant="acme") == 4
        assert sample(text, "corral_queue_depth", tenant="globex") == 1
        assert sample(text, "corral_oldest_queued_age_seconds", tenant="acme") > 0
        assert sample(text, "corral_in_flight", tenant="acme") == 0
        assert sample(text, "corral_runs", status="queued") == 5
        assert sample(text, "corral_runs_submitted_total") == 5
        assert sample(text, "corral_submit_latency_seconds_count") == 5
        assert sample(text, "corral_backpressure_rejections_total", tenant="globex") == 2
        with pytest.raises(AssertionError, match="not in metrics"):
            sample(text, "corral_backpressure_rejections_total", tenant="acme")
        assert sample(text, "corral_suggested_workers") >= 1
        assert sample(text, "corral_queue_wait_seconds_count") == 0

        worker = corral_app.worker(concurrency=4, poll_interval=0.02)
        task = asyncio.create_task(worker.run(until_idle=True))
        await asyncio.wait_for(task, 20)
        async with scheduler.acquire("agent-1"):
            waiting = asyncio.create_task(_acquire_briefly(scheduler))
            await asyncio.sleep(0.05)
            text = (await client.get("/metrics", headers=H(keys.admin))).text
            assert sample(text, "corral_scheduler_holders", scheduler="llm") == 1
            assert sample(text, "corral_scheduler_waiters", scheduler="llm") == 1
        await waiting
        text = (await client.get("/metrics", headers=H(keys.admin))).text
        assert sample(text, "corral_scheduler_grants_total", scheduler="llm") == 2
        assert sample(text, "corral_queue_depth", tenant="acme") == 0
        assert sample(text, "corral_runs_finished_total", status="succeeded") == 4
        assert sample(text, "corral_runs_finished_total", status="failed") == 1
        finished = "corral_tenant_runs_finished_total"
        assert sample(text, finished, tenant="acme", status="succeeded") == 4
        assert sample(text, finished, tenant="globex", status="failed") == 1
        assert sample(text, finished, tenant="globex", status="succeeded") == 0
        queues = (await client.get("/v1/queues", headers=H(keys.b))).json()
        (own,) = queues["tenants"]  # a tenant's key sees its own counts only
        assert (own["tenant"], own["succeeded"], own["failed"]) == ("globex", 0, 1)
        assert sample(text, "corral_queue_wait_seconds_count") == 5  # each run's first lease
        assert sample(text, "corral_redeliveries_total") == 0
        assert sample(text, "corral_handoffs_total") == 0  # all queued before any worker
        assert sample(text, "corral_leases_expired_unreclaimed") == 0
        assert all(r for r in ids)


async def _acquire_briefly(scheduler: Scheduler) -> None:
    async with scheduler.acquire("agent-2"):
        pass


@pytest.mark.parametrize("public", [True])
async def test_public_metrics_need_no_key(corral_app: Corral, public: bool) -> None:
    api = create_api(corral_app, ApiSettings(public_metrics=public))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://corral.test"
    ) as client:
        r = await client.get("/metrics")
        assert r.status_code == 200 and "corral_runs_submitted_total" in r.text


async def test_metrics_export_each_schedules_latest_tick_and_latest_run(
    corral_app: Corral, keys: Keys, client: httpx.AsyncClient
) -> None:
    text = (await client.get("/metrics", headers=H(keys.admin))).text
    assert "corral_schedule_last_tick_timestamp_seconds" not in text  # no schedule seen yet
    spec = RunSpec("echo", tenant="acme")
    store = corral_app.store
    await store.submit_scheduled("nightly", 86_400.0, spec)  # first seen: no run
    await store.submit_scheduled("nightly", 172_800.0, spec)  # a run
    await store.submit_scheduled("nightly", 259_200.0, spec, run=False)  # skipped
    await store.submit_scheduled("hourly", 3_600.0, spec)  # only seen
    text = (await client.get("/metrics", headers=H(keys.admin))).text
    tick, run = (
        "corral_schedule_last_tick_timestamp_seconds",
        "corral_schedule_last_run_tick_timestamp_seconds",
    )
    assert sample(text, tick, schedule="nightly") == 259_200.0
    assert sample(text, run, schedule="nightly") == 172_800.0
    assert sample(text, tick, schedule="hourly") == 3_600.0
    assert f'{run}{{schedule="hourly"}}' not in text  # no run yet: no figure to alert on
    # a tenant's own schedule is no series of its own: tenants could add them without bound
    await corral_app.create_schedule("mine", "echo", every=60, tenant="acme")
    text = (await client.get("/metrics", headers=H(keys.admin))).text
    assert "acme/mine" not in text and sample(text, tick, schedule="hourly") == 3_600.0
    # counted instead, running and paused
    await corral_app.create_schedule("held", "echo", every=60, tenant="acme")
    await corral_app.pause_schedule("held", tenant="acme")
    text = (await client.get("/metrics", headers=H(keys.admin))).text
    assert sample(text, "corral_stored_schedules", state="running") == 1.0
    assert sample(text, "corral_stored_schedules", state="paused") == 1.0


async def test_schedules_lists_the_apps_schedules_by_the_keys_tenant(
    corral_app: Corral, keys: Keys, client: httpx.AsyncClient
) -> None:
    corral_app.schedule("nightly", "echo", {"x": 1}, cron="0 2 * * *", tenant="acme")
    corral_app.schedule("hourly", "echo", every=3600, tenant="globex")
    await corral_app.store.submit_scheduled("nightly", 86_400.0, RunSpec("echo"))
    await corral_app.store.submit_scheduled("nightly", 172_800.0, RunSpec("echo"))
    listed = (await client.get("/v1/schedules", headers=H(keys.admin))).json()["schedules"]
    by_name = {s["name"]: s for s in listed}
    assert by_name["nightly"]["when"] == "cron '0 2 * * *'"
    assert (by_name["nightly"]["agent"], by_name["nightly"]["input"]) == ("echo", {"x": 1})
    assert by_name["nightly"]["last_tick"] == by_name["nightly"]["last_run_tick"] == 172_800.0
    assert by_name["nightly"]["next_tick"] > time.time()
    assert by_name["nightly"]["next_tick"] % 86_400 == 7_200  # 02:00 UTC
    assert by_name["hourly"]["last_tick"] is None  # no worker has seen it yet
    acme = (await client.get("/v1/schedules", headers=H(keys.a))).json()["schedules"]
    assert [s["name"] for s in acme] == ["nightly"]
    globex = (await client.get("/v1/schedules", headers=H(keys.b))).json()["schedules"]
    assert [s["name"] for s in globex] == ["new-year", "hourly"]  # the app's own, then this
    assert (await client.get("/v1/schedules")).status_code == 401


async def test_a_schedule_name_its_url_cannot_carry_is_422_and_stores_nothing(
    corral_app: Corral, keys: Keys, client: httpx.AsyncClient
) -> None:
    for name in (".", ".."):
        body = {"name": name, "agent": "echo", "every": 60}
        r = await client.post("/v1/schedules", json=body, headers=H(keys.a))
        message = assert_error(r, 422, "invalid_input")["message"]
        assert message.startswith(f"schedule may not be '{name}'")
    assert await corral_app.store.stored_schedules() == []


async def test_a_time_zone_of_the_machine_rather_than_iana_is_422_and_stores_nothing(
    corral_app: Corral, keys: Keys, client: httpx.AsyncClient
) -> None:
    for tz, message in (
        ("localtime", "time zone 'localtime' is the zone of whichever machine runs"),
        ("posixrules", "no IANA time zone named 'posixrules'"),
    ):
        body = {"name": "daily", "agent": "echo", "cron": "0 9 * * *", "tz": tz}
        r = await client.post("/v1/schedules", json=body, headers=H(keys.a))
        refusal = assert_error(r, 422, "invalid_input")["message"]
        assert refusal.startswith(f"schedule 'acme/daily': {message}")
    assert await corral_app.store.stored_schedules() == []


async def test_tenants_create_list_and_delete_their_own_schedules(
    corral_app: Corral, keys: Keys, client: httpx.AsyncClient
) -> None:
    body = {"name": "daily", "agent": "echo", "input": {"a": 1}, "cron": "30 6 * * *"}
    made = await client.post("/v1/schedules", json=body, headers=H(keys.a))
    assert made.status_code == 201, made.text
    assert made.headers["location"] == "/v1/schedules/daily"
    out = made.json()
    assert (out["name"], out["stored"], out["tenant"]) == ("acme/daily", True, "acme")
    assert out["next_tick"] % 86_400 == 6 * 3600 + 1800 and out["last_run_tick"] is None
    # the Location reads it back
    read = await client.get(made.headers["location"], headers=H(keys.a))
    assert read.status_code == 200 and read.json() == out
    again = await client.post("/v1/schedules", json=body, headers=H(keys.a))
    assert again.status_code == 409 and again.json()["error"]["code"] == "schedule_exists"
    # another tenant's name space is its own
    every = {"name": "daily", "agent": "echo", "every": 60}
    assert (await client.post("/v1/schedules", json=every, headers=H(keys.b))).status_code == 201

    def stored(listing: httpx.Response) -> list[str]:
        return [s["name"] for s in listing.json()["schedules"] if s["stored"]]

    assert stored(await client.get("/v1/schedules", headers=H(keys.a))) == ["acme/daily"]
    assert stored(await client.get("/v1/schedules", headers=H(keys.admin))) == [
        "acme/daily",
        "globex/daily",
    ]
    only = await client.get("/v1/schedules?tenant=globex", headers=H(keys.admin))
    assert stored(only) == ["globex/daily"]
    # pause and resume: the tenant's own only
    paused = await client.post("/v1/schedules/daily/pause", headers=H(keys.a))
    assert paused.status_code == 200 and paused.json()["paused_at"] is not None
    assert paused.json()["name"] == "acme/daily"
    resumed = await client.post("/v1/schedules/daily/resume", headers=H(keys.a))
    assert resumed.status_code == 200 and resumed.json()["paused_at"] is None
    missing = await client.post("/v1/schedules/weekly/pause", headers=H(keys.a))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "schedule_not_found"
    assert (await client.get("/v1/schedules/weekly", headers=H(keys.a))).status_code == 404
    # each key reads its own tenant's schedule of a name; an admin names the tenant
    mine = await client.get("/v1/schedules/daily", headers=H(keys.b))
    assert (mine.json()["name"], mine.json()["when"]) == ("globex/daily", "every 60 s")
    theirs = await client.get("/v1/schedules/daily?tenant=acme", headers=H(keys.admin))
    assert theirs.json()["name"] == "acme/daily"
    # a tenant key naming another tenant changes nothing, neither theirs nor its own
    for method, path in (
        ("DELETE", "/v1/schedules/daily?tenant=acme"),
        ("POST", "/v1/schedules/daily/pause?tenant=acme"),
        ("POST", "/v1/schedules/daily/resume?tenant=acme"),
        ("POST", "/v1/schedules?tenant=acme"),
        ("GET", "/v1/schedules/daily?tenant=acme"),
    ):
        refused = await client.request(method, path, json=every, headers=H(keys.b))
        assert refused.status_code == 403, (method, path)
        assert refused.json()["error"]["code"] == "forbidden"
    assert stored(await client.get("/v1/schedules", headers=H(keys.admin))) == [
        "acme/daily",
        "globex/daily",
    ]
    gone = await client.delete("/v1/schedules/daily", headers=H(keys.b))
    assert gone.status_code == 204
    assert stored(await client.get("/v1/schedules", headers=H(keys.a))) == ["acme/daily"]
    assert (await client.delete("/v1/schedules/daily", headers=H(keys.b))).status_code == 404
    # an admin key creates one for another tenant
    made = await client.post("/v1/schedules?tenant=globex", json=every, headers=H(keys.admin))
    assert made.status_code == 201 and made.json()["tenant"] == "globex"
    assert made.headers["location"] == "/v1/schedules/daily?tenant=globex"
    gone = await client.delete(made.headers["location"], headers=H(keys.admin))
    assert gone.status_code == 204
    assert (await client.get(made.headers["location"], headers=H(keys.admin))).status_code == 404
    admin = await client.delete("/v1/schedules/daily?tenant=acme", headers=H(keys.admin))
    assert admin.status_code == 204
    assert await corral_app.store.stored_schedules() == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"every": 60}, "invalid_input"),  # both cron and every
        ({"cron": None}, "invalid_input"),  # neither
        ({"cron": "99 * * * *"}, "invalid_input"),
        ({"tz": "Nowhere/Land"}, "invalid_input"),
        ({"name": "a/b"}, "invalid_input"),
        ({"agent": "nope"}, "unknown_agent"),
        ({"priority": "7"}, "invalid_input"),
        ({"surprise": 1}, "invalid_input"),
    ],
)
async def test_a_bad_schedule_is_a_422_and_nothing_is_stored(
    corral_app: Corral, keys: Keys, client: httpx.AsyncClient, change: dict[str, object], code: str
) -> None:
    body = {"name": "daily", "agent": "echo", "cron": "0 6 * * *", **change}
    refused = await client.post("/v1/schedules", json=body, headers=H(keys.a))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == code
    assert await corral_app.store.stored_schedules() == []


async def test_admins_see_the_workers_and_metrics_count_them_by_state(
    corral_app: Corral, keys: Keys, client: httpx.AsyncClient
) -> None:
    worker = corral_app.worker(concurrency=2, express_slots=1, poll_interval=0.05)
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(500):
            if await corral_app.workers():
                break
            await asyncio.sleep(0.02)
        # a worker killed a while ago: its last report is older than its lease TTL
        old = replace(worker.presence(), worker_id="gone:1", seen_at=time.time() - 100)
        await corral_app.store.report_worker(old)
        listed = await client.get("/v1/workers", headers=H(keys.admin))
        assert listed.status_code == 200, listed.text
        by_id = {w["worker_id"]: w for w in listed.json()["workers"]}
        assert by_id[worker.worker_id]["state"] == "running"
        assert (by_id[worker.worker_id]["concurrency"], by_id["gone:1"]["state"]) == (2, "lost")
        assert by_id[worker.worker_id]["agents"] == sorted(corral_app.agents)
        refused = await client.get("/v1/workers", headers=H(keys.a))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        text = (await client.get("/metrics", headers=H(keys.admin))).text
        assert sample(text, "corral_workers", state="running") == 1
        assert sample(text, "corral_workers", state="lost") == 1
        assert sample(text, "corral_workers", state="draining") == 0
        assert sample(text, "corral_worker_slots") == 3  # the lost one's not counted
        assert sample(text, "corral_worker_busy_slots") == 0
        assert sample(text, "corral_stuck_agents") == 0
    finally:
        worker.stop()
        await asyncio.wait_for(running, 20)
    listed = await client.get("/v1/workers", headers=H(keys.admin))
    assert [w["worker_id"] for w in listed.json()["workers"]] == ["gone:1"]
