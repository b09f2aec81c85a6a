"""Event streams in process: the journal as Server-Sent Events, resumable with Last-Event-ID
(nothing lost, nothing repeated), ending with the run; interactive submits
(``POST /v1/runs?stream=true``); a stream whose key is revoked while it is open; and streams
ended by the service stopping. Live streaming and disconnects over a real socket, and SIGTERM,
are in test_serve.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from corral import Corral
from corral.api import ApiSettings, create_api
from corral.api.service import close_streams
from tests.e2e.conftest import Keys
from tests.e2e.sse import Event, parse

H = Keys.header

pytestmark = pytest.mark.usefixtures("worker")


async def events_of(
    client: httpx.AsyncClient,
    key: str,
    run_id: str,
    headers: dict[str, str] | None = None,
    **params: object,
) -> list[Event]:
    r = await client.get(
        f"/v1/runs/{run_id}/events", params=params, headers={**H(key), **(headers or {})}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return parse(r.text)


async def test_the_stream_is_the_journal_then_an_end_event(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    run_id = (
        await client.post("/v1/runs", json={"agent": "steps", "input": {"n": 5}}, headers=H(keys.a))
    ).json()["run_id"]
    events = await events_of(client, keys.a, run_id)
    journal = await corral_app.journal(run_id)
    *entries, end = events
    assert [int(e.id) for e in entries if e.id] == [j.seq for j in journal]
    assert [(e.data["kind"], e.data["name"], e.data["data"]) for e in entries] == [
        (j.kind, j.name, j.data) for j in journal
    ]
    assert end.event == "end" and end.id is None
    assert end.data["status"] == "succeeded" and end.data["result"] == {"ticks": 5}
    assert end.data["last_seq"] == journal[-1].seq


async def test_resuming_with_last_event_id_loses_and_repeats_nothing(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    run_id = (
        await client.post(
            "/v1/runs", json={"agent": "steps", "input": {"n": 12}}, headers=H(keys.a)
        )
    ).json()["run_id"]
    full = [e for e in await events_of(client, keys.a, run_id) if e.event == "journal"]
    ids = [e.id for e in full]
    assert len(ids) == len(set(ids)) == 13  # submitted + 12 ticks
    for cut in range(len(full)):
        resumed = await events_of(client, keys.a, run_id, {"Last-Event-ID": str(ids[cut])})
        journal = [e for e in resumed if e.event == "journal"]
        assert full[: cut + 1] + journal == full, cut
        assert resumed[-1].event == "end"
    # ?after= does the same for clients that cannot set headers; the header wins over it
    assert [
        e.id for e in await events_of(client, keys.a, run_id, after=ids[5]) if e.event == "journal"
    ] == ids[6:]
    assert [
        e.id
        for e in await events_of(client, keys.a, run_id, {"Last-Event-ID": ids[9]}, after=ids[2])
        if e.event == "journal"
    ] == ids[10:]


async def test_a_failed_run_ends_its_stream_with_the_error(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    run_id = (
        await client.post("/v1/runs", json={"agent": "fail", "input": "boom"}, headers=H(keys.a))
    ).json()["run_id"]
    end = (await events_of(client, keys.a, run_id))[-1]
    assert end.event == "end" and end.data["status"] == "failed"
    assert "asked to fail" in end.data["error"]["message"]


async def test_an_interactive_submit_answers_with_the_runs_stream(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    r = await client.post(
        "/v1/runs",
        params={"stream": "true"},
        json={"agent": "steps", "input": {"n": 3}},
        headers=H(keys.a),
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse(r.text)
    accepted = events[0]
    assert accepted.event == "accepted" and accepted.data["status"] == "queued"
    run_id = accepted.data["run_id"]
    assert r.headers["location"] == f"/v1/runs/{run_id}" and r.headers["x-run-id"] == run_id
    ticks = [e.data["data"] for e in events if e.event == "journal" and e.data["kind"] == "event"]
    assert ticks == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert events[-1].event == "end" and events[-1].data["result"] == {"ticks": 3}
    # the run was executed by the worker, and is an ordinary run afterwards
    run = await corral_app.get(run_id)
    assert run.status == "succeeded" and run.lease_owner is None and run.attempts == 1


async def test_a_bad_last_event_id_is_422(client: httpx.AsyncClient, keys: Keys) -> None:
    run_id = (await client.post("/v1/runs", json={"agent": "echo"}, headers=H(keys.a))).json()[
        "run_id"
    ]
    r = await client.get(
        f"/v1/runs/{run_id}/events", headers={**H(keys.a), "Last-Event-ID": "seven"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"


class Spy:
    """The API, with what its responses sent so far readable while they stream (httpx's
    ASGITransport hands a response over only once it has ended)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent = ""
        self.changed = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def spied(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                self.sent += message.get("body", b"").decode()
                self.changed.set()
            await send(message)

        await self.app(scope, receive, spied)

    async def until(self, text: str, count: int = 1) -> None:
        while self.sent.count(text) < count:
            self.changed.clear()
            await self.changed.wait()


@asynccontextmanager
async def keepalive_client(
    corral_app: Corral, keepalive: float, key_cache_ttl: float = 0
) -> AsyncIterator[tuple[httpx.AsyncClient, Spy]]:
    """A client of an API whose streams send a keepalive every ``keepalive`` seconds and whose
    key cache holds nothing (or keeps answers ``key_cache_ttl`` seconds), and the spy on that
    API."""
    settings = ApiSettings(
        stream_poll_interval=0.02, stream_keepalive=keepalive, key_cache_ttl=key_cache_ttl
    )
    spy = Spy(create_api(corral_app, settings))
    transport = httpx.ASGITransport(app=spy)
    async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as client:
        yield client, spy


async def idle_stream(
    client: httpx.AsyncClient, key: str
) -> tuple[str, asyncio.Task[httpx.Response]]:
    """A run due in an hour, and the request of its stream: open, idle, sending keepalives."""
    run_id = (
        await client.post("/v1/runs", json={"agent": "echo", "delay": 3600}, headers=H(key))
    ).json()["run_id"]
    return run_id, asyncio.create_task(client.get(f"/v1/runs/{run_id}/events", headers=H(key)))


async def test_revoking_its_key_ends_an_open_stream_with_the_401s_error(
    keys: Keys, corral_app: Corral
) -> None:
    async with keepalive_client(corral_app, keepalive=0.1) as (client, spy):
        run_id, stream = await idle_stream(client, keys.a)
        # open across a few keepalives, each of which asked for the (valid) key
        await asyncio.wait_for(spy.until(": keepalive", 3), timeout=10)
        assert not stream.done()
        assert await corral_app.store.revoke_api_key(keys.a.split("_")[1])
        async with asyncio.timeout(5):
            r = await stream
        *entries, last = parse(r.text)
        assert [e.data["kind"] for e in entries] == ["submitted"]
        refused = await client.get(f"/v1/runs/{run_id}", headers=H(keys.a))
        assert refused.status_code == 401
        assert last.event == "error" and last.data == refused.json()["error"]
        assert last.data["code"] == "unauthorized"


async def test_a_revoked_keys_stream_ends_about_when_its_requests_fail_not_a_keepalive_later(
    keys: Keys, corral_app: Corral
) -> None:
    # keepalives 15 s apart (the default), a key cache of 0.2 s: the stream asks for its key
    # each second (the floor), so it ends within seconds of the revocation, not 15
    async with keepalive_client(corral_app, keepalive=15, key_cache_ttl=0.2) as (client, spy):
        _, stream = await idle_stream(client, keys.a)
        await asyncio.wait_for(spy.until("event: journal"), timeout=10)
        assert await corral_app.store.revoke_api_key(keys.a.split("_")[1])
        revoked = asyncio.get_running_loop().time()
        async with asyncio.timeout(8):
            r = await stream
        took = asyncio.get_running_loop().time() - revoked
        last = parse(r.text)[-1]
        assert last.event == "error" and last.data["code"] == "unauthorized"
        assert ": keepalive" not in r.text
        assert took < 5, took


async def test_a_busy_stream_asks_for_its_key_once_a_keepalive_not_once_an_event(
    keys: Keys, corral_app: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = 0
    by_hash = corral_app.store.api_key_by_hash

    async def counted(key_hash: str) -> Any:
        nonlocal asked
        asked += 1
        return await by_hash(key_hash)

    monkeypatch.setattr(corral_app.store, "api_key_by_hash", counted)
    async with keepalive_client(corral_app, keepalive=0.25) as (client, _):
        loop = asyncio.get_running_loop()
        started = loop.time()
        r = await client.post(
            "/v1/runs",
            params={"stream": "true"},
            json={"agent": "steps", "input": {"n": 40, "delay": 0.03}},
            headers=H(keys.a),
        )
        took = loop.time() - started
    events = parse(r.text)
    assert events[-1].event == "end" and events[-1].data["status"] == "succeeded"
    assert sum(e.event == "journal" for e in events) >= 40
    # the request's own check, then one a keepalive interval while the run went on
    assert 2 <= asked <= 1 + took / 0.25 + 1, (asked, took)


SHUTDOWN = {
    "code": "shutdown",
    "message": "the service is stopping: reconnect with Last-Event-ID to resume",
}


async def test_a_stopping_service_ends_open_and_later_streams_with_a_shutdown_event(
    keys: Keys, corral_app: Corral
) -> None:
    async with keepalive_client(corral_app, keepalive=15) as (client, spy):
        run_id, stream = await idle_stream(client, keys.a)
        await asyncio.wait_for(spy.until("event: journal"), timeout=10)
        await close_streams(spy.app)
        async with asyncio.timeout(5):
            r = await stream
        *entries, last = parse(r.text)
        assert [e.data["kind"] for e in entries] == ["submitted"]
        assert last.event == "error" and last.data == SHUTDOWN
        # opened while the server still listens: what there is to send, then the same end
        async with asyncio.timeout(5):
            again = await client.get(f"/v1/runs/{run_id}/events", headers=H(keys.a))
        assert [(e.event, e.data.get("kind")) for e in parse(again.text)] == [
            ("journal", "submitted"),
            ("error", None),
        ]
