"""End to end against real ``corral serve`` processes, on SQLite and PostgreSQL: API keys from
the CLI, tenant isolation over the wire, live event streams resumed after a disconnect, an
interactive submit whose client goes away, an API-only node, and a clean SIGTERM (open event
streams included)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from corral import Corral
from tests.e2e.server import corral, create_key, serve
from tests.e2e.sse import Event, aiter_events
from tests.e2e.test_streams import SHUTDOWN

pytestmark = pytest.mark.timeout(120)


def H(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_status(
    client: httpx.AsyncClient, key: str, run_id: str, *statuses: str, timeout: float = 20
) -> dict[str, object]:
    async with asyncio.timeout(timeout):
        while True:
            run = (await client.get(f"/v1/runs/{run_id}", headers=H(key))).json()
            if run["status"] in statuses:
                return dict(run)
            await asyncio.sleep(0.05)


def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = corral(
            "serve", "--port", str(port), url=f"sqlite:///{tmp_path / 'c.db'}", check=False
        )
    assert out.returncode == 1, out.stderr  # not 3, which says the database is unreachable
    assert f"error: cannot serve on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_keys_cli_creates_lists_and_revokes(db_url: str) -> None:
    token = create_key(db_url, "acme")
    admin = create_key(db_url, "ops", admin=True)
    assert token.startswith("crl_") and admin.startswith("crl_") and token != admin
    key_id = token.split("_")[1]
    listed = corral("keys", "list", "--json", url=db_url).stdout
    assert key_id in listed and token not in listed  # the token itself is never stored
    assert corral("keys", "revoke", key_id, url=db_url).returncode == 0
    again = corral("keys", "revoke", key_id, url=db_url, check=False)
    assert again.returncode == 1 and "no live key" in again.stderr


async def test_a_served_api_isolates_tenants(db_url: str, tmp_path: Path) -> None:
    a, b = create_key(db_url, "acme"), create_key(db_url, "globex")
    with serve(db_url, tmp_path / "serve.log", ["--workers", "1"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            r = await client.post(
                "/v1/runs", json={"agent": "steps", "input": {"n": 3}}, headers=H(a)
            )
            assert r.status_code == 202
            run_id = r.json()["run_id"]
            for method, path in (
                ("GET", f"/v1/runs/{run_id}"),
                ("GET", f"/v1/runs/{run_id}/journal"),
                ("GET", f"/v1/runs/{run_id}/events"),
                ("POST", f"/v1/runs/{run_id}/cancel"),
            ):
                denied = await client.request(method, path, headers=H(b))
                assert denied.status_code == 404, (method, path, denied.text)
                assert denied.json()["error"]["code"] == "run_not_found"
            listed = (await client.get("/v1/runs", headers=H(b))).json()
            assert listed["runs"] == []
            assert (await client.get("/v1/runs", headers=H(a))).json()["runs"][0]["id"] == run_id
            done = await wait_status(client, a, run_id, "succeeded")
            assert done["result"] == {"ticks": 3} and done["cancel_requested"] is False
            assert (await client.get("/v1/runs")).status_code == 401


async def read_events(response: httpx.Response, stop_after: int | None = None) -> list[Event]:
    events = []
    async for event in aiter_events(response.aiter_lines()):
        events.append(event)
        if stop_after is not None and sum(e.event == "journal" for e in events) >= stop_after:
            break
    return events


async def test_a_live_stream_resumed_after_a_disconnect_loses_and_repeats_nothing(
    db_url: str, tmp_path: Path
) -> None:
    a = create_key(db_url, "acme")
    with serve(db_url, tmp_path / "serve.log", ["--workers", "1"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            run_id = (
                await client.post(
                    "/v1/runs",
                    json={"agent": "steps", "input": {"n": 30, "delay": 0.03}},
                    headers=H(a),
                )
            ).json()["run_id"]
            async with client.stream("GET", f"/v1/runs/{run_id}/events", headers=H(a)) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                first = await read_events(r, stop_after=6)
            # disconnected while the run is still going
            running = (await client.get(f"/v1/runs/{run_id}", headers=H(a))).json()
            assert running["status"] in ("queued", "running")
            last_id = [e.id for e in first if e.event == "journal"][-1]
            async with client.stream(
                "GET", f"/v1/runs/{run_id}/events", headers={**H(a), "Last-Event-ID": str(last_id)}
            ) as r:
                rest = await read_events(r)
            assert rest[-1].event == "end" and rest[-1].data["status"] == "succeeded"
            got = [int(e.id) for e in first + rest if e.event == "journal" and e.id]
            journal = (await client.get(f"/v1/runs/{run_id}/journal", headers=H(a))).json()
            assert got == [e["seq"] for e in journal["entries"]]  # each once, in order
            assert len(got) == 31


async def test_an_interactive_client_that_disconnects_does_not_cancel_its_run(
    db_url: str, tmp_path: Path
) -> None:
    a = create_key(db_url, "acme")
    with serve(db_url, tmp_path / "serve.log", ["--workers", "1"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            async with client.stream(
                "POST",
                "/v1/runs",
                params={"stream": "true"},
                json={"agent": "steps", "input": {"n": 10, "delay": 0.05}},
                headers=H(a),
            ) as r:
                assert r.status_code == 200
                events = await read_events(r, stop_after=2)
            accepted = events[0]
            assert accepted.event == "accepted"
            run_id = accepted.data["run_id"]
            done = await wait_status(client, a, run_id, "succeeded", "failed", "cancelled")
            assert done["status"] == "succeeded" and done["result"] == {"ticks": 10}


async def test_an_api_only_node_accepts_runs_that_a_worker_elsewhere_executes(
    db_url: str, tmp_path: Path
) -> None:
    a = create_key(db_url, "acme")
    with serve(db_url, tmp_path / "api.log", ["--workers", "0", "--retain", "7d"]) as api_node:
        async with httpx.AsyncClient(base_url=api_node.url, timeout=30) as client:
            run_id = (
                await client.post("/v1/runs", json={"agent": "echo", "input": 42}, headers=H(a))
            ).json()["run_id"]
            await asyncio.sleep(0.5)
            run = (await client.get(f"/v1/runs/{run_id}", headers=H(a))).json()
            assert run["status"] == "queued"  # nothing executes on an API-only node
            assert (await client.get("/readyz")).json() == {"status": "ready"}
            with serve(db_url, tmp_path / "worker.log", ["--workers", "1"]):
                done = await wait_status(client, a, run_id, "succeeded")
            assert done["result"] == 42
    log = (tmp_path / "api.log").read_text()
    assert "listening on" in log and "deleting runs ended over 7.0d ago" in log, log


async def test_sigterm_drains_and_exits_cleanly(db_url: str, tmp_path: Path) -> None:
    a = create_key(db_url, "acme")
    with serve(db_url, tmp_path / "serve.log", ["--workers", "1"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            run_id = (
                await client.post(
                    "/v1/runs",
                    json={"agent": "steps", "input": {"n": 5, "delay": 0.1}},
                    headers=H(a),
                )
            ).json()["run_id"]
            await wait_status(client, a, run_id, "running")
        assert server.terminate(timeout=30) == 0
    # the run in flight was finished during the drain
    async with Corral(db_url) as app:
        run = await app.get(run_id)
    assert run.status == "succeeded", run


async def test_sigterm_ends_open_streams_with_a_shutdown_event_and_exits_promptly(
    db_url: str, tmp_path: Path
) -> None:
    a = create_key(db_url, "acme")
    log = tmp_path / "serve.log"
    with serve(db_url, log, ["--workers", "1"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            # due in an hour: its stream stays open and idle, as long as the server lets it
            run_id = (
                await client.post("/v1/runs", json={"agent": "echo", "delay": 3600}, headers=H(a))
            ).json()["run_id"]
            async with client.stream("GET", f"/v1/runs/{run_id}/events", headers=H(a)) as r:
                events = aiter_events(r.aiter_lines())
                first = await anext(events)
                assert first.event == "journal" and first.data["kind"] == "submitted"
                server.proc.send_signal(signal.SIGTERM)
                stopped = time.monotonic()
                async with asyncio.timeout(10):
                    rest = [event async for event in events]
        assert rest == [Event("error", SHUTDOWN, None)]
        assert server.terminate(timeout=10) == 0
        # within uvicorn's graceful timeout (5 s), past which it cancels open responses
        assert time.monotonic() - stopped < 5
    text = log.read_text()
    assert "Traceback" not in text and "graceful shutdown exceeded" not in text, text
