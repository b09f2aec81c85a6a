"""Tenants are isolated by their keys: another tenant's run is a 404 exactly like an unknown
one (no existence leak), listings and queue figures show only the key's tenant, and an admin
key sees everything. In process, on both backends (tests/e2e/test_serve.py repeats the core of
it against a real server)."""

from __future__ import annotations

import httpx
import pytest

from corral import Corral
from tests.e2e.conftest import Keys

H = Keys.header


async def submit(client: httpx.AsyncClient, key: str, **body: object) -> str:
    r = await client.post("/v1/runs", json={"agent": "echo", **body}, headers=H(key))
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


async def test_tenant_b_cannot_read_cancel_or_stream_tenant_a_runs(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    a_run = await submit(client, keys.a, input={"secret": "acme"})
    for method, path in (
        ("GET", f"/v1/runs/{a_run}"),
        ("GET", f"/v1/runs/{a_run}/journal"),
        ("GET", f"/v1/runs/{a_run}/events"),
        ("GET", f"/v1/runs/{a_run}/children"),
        ("POST", f"/v1/runs/{a_run}/cancel"),
    ):
        theirs = await client.request(method, path, headers=H(keys.b))
        unknown = await client.request(
            method, path.replace(a_run, "0" * len(a_run)), headers=H(keys.b)
        )
        assert theirs.status_code == unknown.status_code == 404, (method, path)
        assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "run_not_found"
        assert "acme" not in theirs.text
    # B's cancel did nothing
    mine = (await client.get(f"/v1/runs/{a_run}", headers=H(keys.a))).json()
    assert mine["status"] == "queued" and mine["cancel_requested"] is False


async def test_listing_and_queues_show_only_the_keys_tenant(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    a_runs = {await submit(client, keys.a) for _ in range(3)}
    b_run = await submit(client, keys.b)
    for params in ({}, {"status": "queued"}, {"agent": "echo"}, {"tenant": "globex"}):
        listed = (await client.get("/v1/runs", params=params, headers=H(keys.b))).json()
        assert [r["id"] for r in listed["runs"]] == [b_run], params
    # asking for another tenant's runs gives nothing (not an error that confirms it exists)
    asked = await client.get("/v1/runs", params={"tenant": "acme"}, headers=H(keys.b))
    assert asked.status_code == 200 and asked.json() == {"runs": [], "next_cursor": None}
    queues = (await client.get("/v1/queues", headers=H(keys.b))).json()
    assert [t["tenant"] for t in queues["tenants"]] == ["globex"]
    assert queues["queued"] == 1 and queues["by_status"] == {}
    # the admin key sees both tenants, and can narrow to one
    everything = (await client.get("/v1/runs", headers=H(keys.admin))).json()
    assert {r["id"] for r in everything["runs"]} == a_runs | {b_run}
    only_a = (await client.get("/v1/runs", params={"tenant": "acme"}, headers=H(keys.admin))).json()
    assert {r["id"] for r in only_a["runs"]} == a_runs
    admin_q = (await client.get("/v1/queues", headers=H(keys.admin))).json()
    assert {t["tenant"]: t["queued"] for t in admin_q["tenants"]} == {"acme": 3, "globex": 1}
    assert admin_q["by_status"] == {"queued": 4}


@pytest.mark.usefixtures("worker")
async def test_an_admin_reads_and_cancels_any_tenant_run(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    a_run = await submit(client, keys.a, agent="steps", input={"n": 50, "delay": 0.05})
    got = await client.get(f"/v1/runs/{a_run}", headers=H(keys.admin))
    assert got.status_code == 200 and got.json()["tenant"] == "acme"
    cancelled = await client.post(f"/v1/runs/{a_run}/cancel", headers=H(keys.admin))
    assert cancelled.status_code == 200
    events = await client.get(f"/v1/runs/{a_run}/events", headers=H(keys.admin))
    assert events.status_code == 200
    assert '"status":"cancelled"' in events.text


async def test_metrics_need_an_admin_key(client: httpx.AsyncClient, keys: Keys) -> None:
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers=H(keys.a))).status_code == 401
    assert (await client.get("/metrics", headers=H(keys.admin))).status_code == 200


async def test_an_admin_key_submits_for_any_tenant_and_a_tenant_key_for_its_own(
    corral_app: Corral, client: httpx.AsyncClient, keys: Keys
) -> None:
    """A platform's backend holds one admin key and submits each customer's runs under the
    customer's tenant: counted in that tenant's quota, visible to that tenant's key."""
    await corral_app.set_tenant("globex", max_queued=1)
    for_acme = await submit(client, keys.admin, tenant="acme", input={"for": "acme"})
    mine = (await client.get(f"/v1/runs/{for_acme}", headers=H(keys.a))).json()
    assert mine["tenant"] == "acme"
    # naming its own tenant is allowed, and the same as naming none
    own = await submit(client, keys.a, tenant="acme")
    assert (await client.get(f"/v1/runs/{own}", headers=H(keys.a))).json()["tenant"] == "acme"
    # a tenant key naming another tenant: refused, and nothing written anywhere
    before = (await client.get("/v1/queues", headers=H(keys.admin))).json()["by_status"]
    for path, body in (
        ("/v1/runs", {"agent": "echo", "tenant": "globex"}),
        ("/v1/runs/batch", {"runs": [{"agent": "echo"}, {"agent": "echo", "tenant": "globex"}]}),
    ):
        refused = await client.post(path, json=body, headers=H(keys.a))
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
        assert "admin key" in refused.json()["error"]["message"]
    after = (await client.get("/v1/queues", headers=H(keys.admin))).json()["by_status"]
    assert after == before
    # an admin batch spanning tenants: each run in its tenant, the tenant's quota applies
    batch = await client.post(
        "/v1/runs/batch",
        json={"runs": [{"agent": "echo", "tenant": "globex"}, {"agent": "echo", "tenant": "acme"}]},
        headers=H(keys.admin),
    )
    assert batch.status_code == 202, batch.text
    ids = [r["run_id"] for r in batch.json()["runs"]]
    runs = [(await client.get(f"/v1/runs/{i}", headers=H(keys.admin))).json() for i in ids]
    assert [r["tenant"] for r in runs] == ["globex", "acme"]
    full = await client.post(
        "/v1/runs", json={"agent": "echo", "tenant": "globex"}, headers=H(keys.admin)
    )
    assert full.status_code == 429 and full.json()["error"]["code"] == "backpressure"
    # the idempotency key is per tenant: the same key for two tenants gives two runs
    one = await submit(client, keys.admin, tenant="acme", idempotency_key="k1")
    two = await submit(client, keys.admin, tenant="ops", idempotency_key="k1")
    assert one != two
    assert await submit(client, keys.admin, tenant="acme", idempotency_key="k1") == one
