"""The HTTP API in process (httpx.ASGITransport), on SQLite and PostgreSQL: submit, read,
list, cancel, journal, children, errors and their one JSON shape."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from corral import Corral
from corral.api import create_api
from tests.e2e.conftest import Keys, assert_error

H = Keys.header


async def test_submit_answers_202_with_location_and_the_run_reads_back(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    r = await client.post(
        "/v1/runs",
        json={
            "agent": "echo",
            "input": {"q": [1, 2]},
            "priority": 5,
            "budget": 2.5,
            "timeout": 90,
        },
        headers=H(keys.a),
    )
    assert r.status_code == 202
    run_id = r.json()["run_id"]
    assert r.json()["status"] == "queued"
    assert r.headers["location"] == f"/v1/runs/{run_id}"
    got = (await client.get(r.headers["location"], headers=H(keys.a))).json()
    assert got["id"] == run_id
    assert got["tenant"] == "acme"  # from the key
    assert (got["agent"], got["input"], got["priority"], got["budget"], got["timeout"]) == (
        "echo",
        {"q": [1, 2]},
        5,
        2.5,
        90,
    )


async def test_submit_takes_attempts_and_a_start_time(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    before = time.time()
    delayed = await client.post(
        "/v1/runs",
        json={"agent": "echo", "max_attempts": 1, "delay": 60, "start_within": 30},
        headers=H(keys.a),
    )
    at = before + 3600
    scheduled = await client.post(
        "/v1/runs", json={"agent": "echo", "not_before": at}, headers=H(keys.a)
    )
    assert delayed.status_code == scheduled.status_code == 202
    one = (await client.get(delayed.headers["location"], headers=H(keys.a))).json()
    two = (await client.get(scheduled.headers["location"], headers=H(keys.a))).json()
    assert one["max_attempts"] == 1 and one["status"] == "queued"
    assert before + 60 <= one["available_at"] <= time.time() + 60
    assert one["start_by"] == one["available_at"] + 30
    assert two["max_attempts"] == 3 and two["available_at"] == at


async def test_a_tenant_key_cannot_name_another_tenant_in_the_body(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    r = await client.post("/v1/runs", json={"agent": "echo", "tenant": "globex"}, headers=H(keys.a))
    assert_error(r, 403, "forbidden")
    r = await client.post("/v1/runs", json={"agent": "echo", "tenant": ""}, headers=H(keys.a))
    assert_error(r, 422, "invalid_input")


async def test_a_repeated_idempotency_key_returns_the_same_run(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    first = await client.post(
        "/v1/runs",
        json={"agent": "echo", "input": 1},
        headers={**H(keys.a), "Idempotency-Key": "order-7"},
    )
    again = await client.post(
        "/v1/runs",
        json={"agent": "echo", "input": 1},
        headers={**H(keys.a), "Idempotency-Key": "order-7"},
    )
    in_body = await client.post(
        "/v1/runs", json={"agent": "echo", "idempotency_key": "order-7"}, headers=H(keys.a)
    )
    assert first.status_code == again.status_code == in_body.status_code == 202
    assert first.json()["run_id"] == again.json()["run_id"] == in_body.json()["run_id"]
    # the same key under another tenant is another run
    other = await client.post(
        "/v1/runs", json={"agent": "echo"}, headers={**H(keys.b), "Idempotency-Key": "order-7"}
    )
    assert other.json()["run_id"] != first.json()["run_id"]
    clash = await client.post(
        "/v1/runs",
        json={"agent": "echo", "idempotency_key": "a"},
        headers={**H(keys.a), "Idempotency-Key": "b"},
    )
    assert_error(clash, 422, "invalid_input")


async def test_list_pages_with_the_cursor_and_filters(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    ids = []
    for i in range(5):
        r = await client.post(
            "/v1/runs",
            json={"agent": "echo" if i % 2 else "steps", "input": {"n": 0}},
            headers=H(keys.a),
        )
        ids.append(r.json()["run_id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/runs", params=params, headers=H(keys.a))).json()
        seen += [run["id"] for run in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each once
    echo = (await client.get("/v1/runs", params={"agent": "echo"}, headers=H(keys.a))).json()
    assert sorted(run["id"] for run in echo["runs"]) == sorted(ids[1::2])
    queued = (await client.get("/v1/runs", params={"status": "queued"}, headers=H(keys.a))).json()
    assert len(queued["runs"]) == 5
    bad = await client.get("/v1/runs", params={"status": "sleeping"}, headers=H(keys.a))
    assert_error(bad, 422, "invalid_input")


async def test_cancel_a_queued_run(client: httpx.AsyncClient, keys: Keys) -> None:
    run_id = (await client.post("/v1/runs", json={"agent": "echo"}, headers=H(keys.a))).json()[
        "run_id"
    ]
    r = await client.post(f"/v1/runs/{run_id}/cancel", headers=H(keys.a))
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    assert (await client.get(f"/v1/runs/{run_id}", headers=H(keys.a))).json()[
        "status"
    ] == "cancelled"


@pytest.mark.usefixtures("worker")
async def test_retry_a_failed_run(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    submitted = await client.post("/v1/runs", json={"agent": "fail", "input": 1}, headers=H(keys.a))
    run_id = submitted.json()["run_id"]
    assert (await corral_app.wait(run_id, timeout=20)).status == "failed"
    # another tenant's key learns nothing of it
    other = await client.post(f"/v1/runs/{run_id}/retry", headers=H(keys.b))
    assert_error(other, 404, "run_not_found")
    r = await client.post(f"/v1/runs/{run_id}/retry", params={"attempts": 2}, headers=H(keys.a))
    assert r.status_code == 200
    assert r.json()["status"] in ("queued", "running", "failed")
    again = await corral_app.wait(run_id, timeout=20)
    assert again.status == "failed" and again.attempts == 2
    ended = await client.post("/v1/runs", json={"agent": "echo", "input": 1}, headers=H(keys.a))
    echo_id = ended.json()["run_id"]
    await corral_app.wait(echo_id, timeout=20)
    refused = await client.post(f"/v1/runs/{echo_id}/retry", headers=H(keys.a))
    assert_error(refused, 409, "run_not_retryable")
    bad = await client.post(f"/v1/runs/{run_id}/retry", params={"attempts": 0}, headers=H(keys.a))
    assert_error(bad, 422, "invalid_input")


@pytest.mark.usefixtures("worker")
async def test_journal_reads_after_a_seq_and_children_list_spawned_runs(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    steps = (
        await client.post("/v1/runs", json={"agent": "steps", "input": {"n": 4}}, headers=H(keys.a))
    ).json()["run_id"]
    parent = (
        await client.post(
            "/v1/runs", json={"agent": "fanout", "input": {"n": 3}}, headers=H(keys.a)
        )
    ).json()["run_id"]
    await corral_app.wait(steps, timeout=20)
    assert (await corral_app.wait(parent, timeout=20)).result == [{"child": i} for i in range(3)]
    whole = (await client.get(f"/v1/runs/{steps}/journal", headers=H(keys.a))).json()
    kinds = [(e["kind"], e["name"]) for e in whole["entries"]]
    assert kinds[0] == ("submitted", "steps")
    assert [e["data"] for e in whole["entries"] if e["kind"] == "event"] == [
        {"i": i} for i in range(4)
    ]
    seqs = [e["seq"] for e in whole["entries"]]
    assert seqs == sorted(seqs) and whole["next_after"] == seqs[-1]
    rest = (
        await client.get(f"/v1/runs/{steps}/journal", params={"after": seqs[1]}, headers=H(keys.a))
    ).json()
    assert [e["seq"] for e in rest["entries"]] == seqs[2:]
    children = (await client.get(f"/v1/runs/{parent}/children", headers=H(keys.a))).json()
    assert len(children["children"]) == 3
    assert {c["parent_id"] for c in children["children"]} == {parent}
    assert all(c["status"] == "succeeded" for c in children["children"])


async def test_unknown_run_and_unknown_route_are_404(client: httpx.AsyncClient, keys: Keys) -> None:
    for path in (
        "/v1/runs/nope",
        "/v1/runs/nope/journal",
        "/v1/runs/nope/events",
        "/v1/runs/nope/children",
    ):
        assert_error(await client.get(path, headers=H(keys.a)), 404, "run_not_found")
    assert_error(await client.post("/v1/runs/nope/cancel", headers=H(keys.a)), 404, "run_not_found")
    assert_error(await client.post("/v1/runs/nope/retry", headers=H(keys.a)), 404, "run_not_found")
    assert_error(await client.get("/v2/elsewhere", headers=H(keys.a)), 404, "not_found")


async def test_requests_without_a_valid_key_are_401(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer crl_nope_nope"},
        {"Authorization": f"Basic {keys.a}"},
    ):
        r = await client.get("/v1/runs", headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
    assert_error(await client.post("/v1/runs", json={"agent": "echo"}), 401, "unauthorized")
    # a revoked key stops working (this fixture's key cache TTL is 0)
    key_id = keys.b.split("_")[1]
    assert (await client.get("/v1/runs", headers=H(keys.b))).status_code == 200
    assert await corral_app.store.revoke_api_key(key_id)
    assert_error(await client.get("/v1/runs", headers=H(keys.b)), 401, "unauthorized")


def _nested(levels: int) -> object:
    value: object = None
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"agent": 7},
        {"agent": ""},
        {"agent": "echo", "priority": "high"},
        {"agent": "echo", "priority": "7"},  # no coercion: the Python API refuses these too
        {"agent": "echo", "priority": True},
        {"agent": "echo", "priority": 1.5},
        {"agent": "echo", "budget": True},
        {"agent": "echo", "budget": "5"},
        {"agent": "echo", "input": _nested(101)},
        {"agent": "echo", "priority": 10**7},
        {"agent": "echo", "budget": -1},
        {"agent": "echo", "timeout": 0},
        {"agent": "echo", "timeout": -5},
        {"agent": "echo", "timeout": "60"},
        {"agent": "echo", "timeout": 1e300},
        {"agent": "echo", "start_within": 0},
        {"agent": "echo", "start_within": "60"},
        {"agent": "echo", "max_attempts": 0},
        {"agent": "echo", "max_attempts": 1001},
        {"agent": "echo", "max_attempts": "3"},
        {"agent": "echo", "delay": -1},
        {"agent": "echo", "delay": 5, "not_before": 1e9},
        {"agent": "echo", "not_before": 1e12},
        {"agent": "echo", "unknown": True},
        {"agent": "ec\x00ho"},
        {"agent": "\ud800"},
        [1, 2],
    ],
)
async def test_invalid_bodies_are_422_in_the_one_error_shape(
    client: httpx.AsyncClient, keys: Keys, body: object
) -> None:
    content = json.dumps(body).encode()  # ASCII escapes: a lone surrogate reaches the server
    r = await client.post(
        "/v1/runs", content=content, headers={**H(keys.a), "Content-Type": "application/json"}
    )
    assert_error(r, 422, "invalid_input")


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/v1/runs?tenant=", "query.tenant: is empty (leave the parameter out"),
        ("GET", "/v1/runs?agent=", "query.agent: is empty (leave the parameter out"),
        ("GET", "/v1/runs?limit=", "query.limit: is empty (leave the parameter out"),
        # an enum's choices stay in the message
        (
            "GET",
            "/v1/runs?status=",
            "query.status: is empty (leave the parameter out, or give "
            "a value: Input should be 'queued', 'running'",
        ),
        ("GET", "/v1/schedules?tenant=", "query.tenant: is empty (leave the parameter out"),
        ("POST", "/v1/runs?stream=", "query.stream: is empty (leave the parameter out"),
    ],
)
async def test_an_empty_query_value_is_422_saying_it_is_empty(
    client: httpx.AsyncClient, keys: Keys, method: str, path: str, message: str
) -> None:
    r = await client.request(method, path, json={"agent": "echo"}, headers=H(keys.admin))
    assert assert_error(r, 422, "invalid_input")["message"].startswith(message)
    assert await _runs_of(client, keys.admin) == []


@pytest.mark.parametrize(
    "path", ["/v1/runs?tenant=%20", "/v1/runs?agent=%20%20", "/v1/schedules?tenant=%20"]
)
async def test_a_blank_name_in_a_query_is_422_for_every_key(
    client: httpx.AsyncClient, keys: Keys, path: str
) -> None:
    # a tenant key naming another tenant gets an empty page; a blank name is no tenant at all
    for key in (keys.a, keys.admin):
        r = await client.get(path, headers=H(key))
        assert assert_error(r, 422, "invalid_input")["message"].endswith(
            "is blank (a name needs a character other than spaces)"
        )


async def test_validation_messages_read_as_corrals_own(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    """Without pydantic's "Value error, " before a reason of corral's, and an empty header
    named as one."""
    both = {"name": "x", "agent": "echo", "cron": "* * * * *", "every": 60}
    r = await client.post("/v1/schedules", json=both, headers=H(keys.a))
    assert assert_error(r, 422, "invalid_input")["message"] == (
        "body: give cron or every, one of the two"
    )
    r = await client.get("/v1/runs?tenant=a%00b", headers=H(keys.admin))
    message = assert_error(r, 422, "invalid_input")["message"]
    assert message == "query.tenant: must not contain NUL characters"
    r = await client.post(
        "/v1/runs", json={"agent": "echo"}, headers={**H(keys.a), "Idempotency-Key": ""}
    )
    assert assert_error(r, 422, "invalid_input")["message"] == (
        "header.Idempotency-Key: is empty (leave the header out, or give a value)"
    )


async def test_malformed_json_and_unknown_agent_are_422(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    r = await client.post(
        "/v1/runs", content=b"{not json", headers={**H(keys.a), "Content-Type": "application/json"}
    )
    assert_error(r, 422, "invalid_input")
    r = await client.post("/v1/runs", json={"agent": "nobody"}, headers=H(keys.a))
    assert "echo" in assert_error(r, 422, "unknown_agent")["message"]


async def test_bodies_over_the_limit_are_413(client: httpx.AsyncClient, keys: Keys) -> None:
    big = {"agent": "echo", "input": "x" * (64 * 1024)}
    assert_error(
        await client.post("/v1/runs", json=big, headers=H(keys.a)), 413, "payload_too_large"
    )

    async def chunks():  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b" " * 1024

    r = await client.post(
        "/v1/runs", content=chunks(), headers={**H(keys.a), "Content-Type": "application/json"}
    )
    assert_error(r, 413, "payload_too_large")
    small = await client.post(
        "/v1/runs", json={"agent": "echo", "input": "x" * 60_000}, headers=H(keys.a)
    )
    assert small.status_code == 202


async def test_a_full_queue_is_429_with_retry_after(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    await corral_app.set_tenant("acme", max_queued=2)
    for _ in range(2):
        assert (
            await client.post("/v1/runs", json={"agent": "echo"}, headers=H(keys.a))
        ).status_code == 202
    r = await client.post("/v1/runs", json={"agent": "echo"}, headers=H(keys.a))
    assert_error(r, 429, "backpressure")
    assert int(r.headers["retry-after"]) >= 1
    # another tenant is not held back
    assert (
        await client.post("/v1/runs", json={"agent": "echo"}, headers=H(keys.b))
    ).status_code == 202


async def test_health_readiness_openapi_and_dashboard(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    spec = (await client.get("/openapi.json")).json()
    submit = spec["paths"]["/v1/runs"]["post"]
    assert {"202", "401", "413", "422", "429"} <= set(submit["responses"])
    assert submit["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    assert (
        "text/event-stream"
        in spec["paths"]["/v1/runs/{run_id}/events"]["get"]["responses"]["200"]["content"]
    )
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "corral" in page.text


async def test_readiness_fails_with_503_when_the_database_is_unreachable() -> None:
    app = Corral("sqlite:////proc/corral-nowhere/corral.db")
    api = create_api(app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://corral.test"
    ) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert_error(await c.get("/readyz"), 503, "store_unavailable")


async def _runs_of(client: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    page = await client.get("/v1/runs?limit=500", headers=H(key))
    assert page.status_code == 200, page.text
    return list(page.json()["runs"])


async def test_a_batch_is_accepted_whole_in_order_for_the_keys_tenant(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    first = await client.post(
        "/v1/runs", json={"agent": "echo", "idempotency_key": "order-1"}, headers=H(keys.a)
    )
    await client.post(f"{first.headers['location']}/cancel", headers=H(keys.a))
    r = await client.post(
        "/v1/runs/batch",
        json={
            "runs": [
                {"agent": "echo", "input": 1},
                {"agent": "steps", "input": {"n": 1}, "priority": 3, "timeout": 9},
                {"agent": "echo", "idempotency_key": "order-1"},  # the run above, cancelled
                {"agent": "echo", "input": 4, "delay": 60, "max_attempts": 1},
            ]
        },
        headers=H(keys.a),
    )
    assert r.status_code == 202, r.text
    runs = r.json()["runs"]
    assert [x["status"] for x in runs] == ["queued", "queued", "cancelled", "queued"]
    assert runs[2]["run_id"] == first.json()["run_id"]
    got = [(await client.get(f"/v1/runs/{x['run_id']}", headers=H(keys.a))).json() for x in runs]
    assert [g["tenant"] for g in got] == ["acme"] * 4
    assert [g["input"] for g in got] == [1, {"n": 1}, None, 4]
    assert (got[1]["priority"], got[1]["timeout"]) == (3, 9)
    assert got[3]["max_attempts"] == 1 and got[3]["available_at"] > got[0]["available_at"] + 50
    assert len(await _runs_of(client, keys.a)) == 4  # three new runs and the first


async def test_a_batchs_keyed_runs_answer_with_the_status_of_the_run_each_key_names(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    old = await client.post(
        "/v1/runs", json={"agent": "echo", "idempotency_key": "k-old"}, headers=H(keys.a)
    )
    await client.post(f"{old.headers['location']}/cancel", headers=H(keys.a))
    r = await client.post(
        "/v1/runs/batch",
        json={
            "runs": [
                {"agent": "echo", "idempotency_key": "k-new"},
                {"agent": "echo", "idempotency_key": "k-old"},
                {"agent": "echo"},
                {"agent": "echo", "idempotency_key": "k-new"},  # the first of this batch
            ]
        },
        headers=H(keys.a),
    )
    assert r.status_code == 202, r.text
    runs = r.json()["runs"]
    assert [x["status"] for x in runs] == ["queued", "cancelled", "queued", "queued"]
    assert runs[1]["run_id"] == old.json()["run_id"]
    assert runs[3]["run_id"] == runs[0]["run_id"] != runs[2]["run_id"]
    assert len(await _runs_of(client, keys.a)) == 3


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"runs": []}, "runs"),
        ({"runs": [{"agent": "echo"}] * 1001}, "runs"),
        ({"runs": [{"agent": "echo"}, {"agent": "echo", "priority": "high"}]}, "runs.1.priority"),
        ({"runs": [{"agent": "echo"}, {"agent": "echo", "tenant": 7}]}, "runs.1.tenant"),
        ({"runs": [{"agent": "echo"}, {"agent": "nosuch"}]}, "nosuch"),
        ({"run": [{"agent": "echo"}]}, "run"),
    ],
)
async def test_a_batch_with_one_bad_run_is_refused_whole(
    client: httpx.AsyncClient, keys: Keys, body: dict[str, Any], names: str
) -> None:
    r = await client.post("/v1/runs/batch", json=body, headers=H(keys.a))
    assert r.status_code == 422, r.text
    assert names in r.json()["error"]["message"]
    assert await _runs_of(client, keys.a) == []


async def test_a_batch_past_the_tenants_quota_is_429_and_keeps_nothing(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    await corral_app.set_tenant("acme", max_queued=3)
    r = await client.post(
        "/v1/runs/batch", json={"runs": [{"agent": "echo"}] * 4}, headers=H(keys.a)
    )
    assert_error(r, 429, "backpressure")
    assert await _runs_of(client, keys.a) == []
    ok = await client.post(
        "/v1/runs/batch", json={"runs": [{"agent": "echo"}] * 3}, headers=H(keys.a)
    )
    assert ok.status_code == 202 and len(ok.json()["runs"]) == 3


async def test_text_that_is_not_valid_unicode_is_refused_and_nothing_is_written(
    corral_app: Corral, client: httpx.AsyncClient, keys: Keys
) -> None:
    """A lone surrogate (valid JSON escape, invalid Unicode) was taken, then every read and
    every page listing its run answered 500: the serializer cannot encode it."""
    lone = '"\\ud800"'
    for path, body in (
        ("/v1/runs", f'{{"agent": "echo", "input": {lone}}}'),
        ("/v1/runs", f'{{"agent": "echo", "input": {{{lone}: 1}}}}'),
        (
            "/v1/runs/batch",
            f'{{"runs": [{{"agent": "echo"}}, {{"agent": "echo", "input": [{lone}]}}]}}',
        ),
        ("/v1/schedules", f'{{"name": "s", "agent": "echo", "every": 60, "input": {lone}}}'),
    ):
        headers = {**H(keys.a), "Content-Type": "application/json"}
        refused = await client.post(path, content=body, headers=headers)
        assert refused.status_code == 422, (path, refused.text)
        assert "Unicode" in refused.json()["error"]["message"]
    assert (await client.get("/v1/runs", headers=H(keys.a))).json()["runs"] == []
    assert await corral_app.store.stored_schedules() == []
    # text outside the basic plane (a surrogate pair in the escape) is fine
    ok = await client.post(
        "/v1/runs", json={"agent": "echo", "input": "\U0001f600"}, headers=H(keys.a)
    )
    assert ok.status_code == 202
    read = await client.get(f"/v1/runs/{ok.json()['run_id']}", headers=H(keys.a))
    assert read.json()["input"] == "\U0001f600"
