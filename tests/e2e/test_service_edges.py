"""Edges of the HTTP service found by an audit: what it serves besides the API, headers a
client may send, a batch's errors, the stream's last sequence number, the metrics of a
refused retry, and a readiness probe against a database that stopped answering."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict

from corral import Corral
from corral.api import ApiSettings, create_api
from tests.e2e.conftest import Keys
from tests.e2e.service_app import build_app
from tests.e2e.test_operations import sample
from tests.e2e.test_streams import events_of
from tests.support.postgres import fresh_schema

H = Keys.header


async def test_no_api_browser_pages_that_load_scripts_from_elsewhere(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/docs", "/redoc"):
        assert (await client.get(path)).status_code == 404
    assert (await client.get("/openapi.json")).status_code == 200


async def test_an_idempotency_key_header_is_read_as_utf8_text(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    headers = {**H(keys.a), "Idempotency-Key": "café".encode()}  # as a client sends it
    body = {"agent": "echo", "idempotency_key": "café"}
    first = await client.post("/v1/runs", json=body, headers=headers)
    assert first.status_code == 202, first.text  # the header and the body agree
    again = await client.post("/v1/runs", json={"agent": "echo"}, headers=headers)
    assert again.json()["run_id"] == first.json()["run_id"]
    bad = {**H(keys.a), "Idempotency-Key": b"\xff\xfe"}  # not UTF-8
    refused = await client.post("/v1/runs", json={"agent": "echo"}, headers=bad)
    assert refused.status_code == 422 and "UTF-8" in refused.text


async def test_a_batch_refuses_an_idempotency_key_header_and_names_a_runs_unknown_agent(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    batch = {"runs": [{"agent": "echo"}, {"agent": "echo"}]}
    keyed = {**H(keys.a), "Idempotency-Key": "batch-1"}
    refused = await client.post("/v1/runs/batch", json=batch, headers=keyed)
    assert refused.status_code == 422  # it was ignored: a retried batch was accepted twice
    assert "give each run its idempotency_key" in refused.json()["error"]["message"]
    unknown = {"runs": [{"agent": "echo"}, {"agent": "nope"}]}
    r = await client.post("/v1/runs/batch", json=unknown, headers=H(keys.a))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "unknown_agent"
    assert r.json()["error"]["message"].startswith("item 1: no agent named 'nope'")
    assert (await corral_app.stats()).queued == 0  # nothing written


@pytest.mark.usefixtures("worker")
async def test_the_end_event_gives_the_journals_last_entry_past_a_cursor(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    run_id = (await client.post("/v1/runs", json={"agent": "echo"}, headers=H(keys.a))).json()[
        "run_id"
    ]
    await corral_app.wait(run_id, timeout=20)
    last = (await corral_app.journal(run_id))[-1].seq
    for cursor in (0, last, last + 90):
        events = await events_of(client, keys.a, run_id, {"Last-Event-ID": str(cursor)})
        assert events[-1].event == "end" and events[-1].data["last_seq"] == last


async def test_a_retry_refused_by_the_quota_is_counted_as_backpressure(
    client: httpx.AsyncClient, keys: Keys, corral_app: Corral
) -> None:
    run_id = (
        await client.post("/v1/runs", json={"agent": "fail", "max_attempts": 1}, headers=H(keys.a))
    ).json()["run_id"]
    worker = corral_app.worker(concurrency=1, poll_interval=0.02)
    await asyncio.wait_for(worker.run(until_idle=True), 20)
    await corral_app.set_tenant("acme", max_queued=1)
    await client.post("/v1/runs", json={"agent": "echo"}, headers=H(keys.a))  # quota full
    refused = await client.post(f"/v1/runs/{run_id}/retry", headers=H(keys.a))
    assert refused.status_code == 429
    metrics = (await client.get("/metrics", headers=H(keys.admin))).text
    assert sample(metrics, "corral_backpressure_rejections_total", tenant="acme") == 1


class FreezableProxy:
    """A TCP relay to a server that can stop passing bytes while keeping its connections
    open: to the client, a server that froze (or a network that dropped everything)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)  # a directory: the server's Unix socket in it
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FreezableProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.flowing.set()
        assert self._server is not None
        self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self._target
        if host.startswith("/"):
            up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def through(proxy: FreezableProxy, dsn: str) -> AsyncIterator[Corral]:
    """The service's app on ``dsn``'s database, reached through ``proxy``."""
    params = conninfo_to_dict(dsn)
    query = f"?options={quote(str(params['options']))}" if "options" in params else ""
    user = params.get("user", "postgres")
    url = f"postgresql://{user}@127.0.0.1:{proxy.port}/{params.get('dbname', user)}{query}"
    app = build_app(url)
    await app.open()
    try:
        yield app
    finally:
        proxy.flowing.set()
        await app.close()


def server_address(dsn: str) -> tuple[str, int]:
    """Where ``dsn``'s server listens: a TCP host, or the directory of its Unix socket."""
    params = conninfo_to_dict(dsn)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)


async def test_readiness_answers_503_within_seconds_while_the_database_is_frozen(
    pg_dsn: str,
) -> None:
    with fresh_schema(pg_dsn) as dsn:
        async with FreezableProxy(*server_address(pg_dsn)) as proxy:
            await _probe_while_frozen(proxy, dsn)


async def _probe_while_frozen(proxy: FreezableProxy, dsn: str) -> None:
    async with through(proxy, dsn) as app:
        transport = httpx.ASGITransport(app=create_api(app, ApiSettings(key_cache_ttl=0)))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/readyz")).status_code == 200
            proxy.flowing.clear()
            loop = asyncio.get_running_loop()
            for _ in range(2):  # the second probe finds the first's ping unanswered
                began = loop.time()
                r = await asyncio.wait_for(client.get("/readyz"), 10)
                assert r.status_code == 503
                assert r.json()["error"]["code"] == "store_unavailable"
                assert loop.time() - began < 4
            proxy.flowing.set()
            for _ in range(50):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("/readyz did not recover")
