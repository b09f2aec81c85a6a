"""Fixtures of the service tests: the API in process over ``httpx.ASGITransport`` on each
backend, API keys for two tenants and an admin, and a worker running in the same loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from corral import Corral
from corral.api import ApiSettings, create_api, create_key
from tests.e2e.service_app import build_app


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    """The response is an error in the API's one JSON shape, of ``status`` and ``code``: its
    ``error`` object (code and message)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


@dataclass(frozen=True)
class Keys:
    a: str  # tenant "acme"
    b: str  # tenant "globex"
    admin: str  # tenant "ops", admin

    @staticmethod
    def header(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def corral_app(db_url: str) -> AsyncIterator[Corral]:
    app = build_app(db_url)
    await app.open()
    try:
        yield app
    finally:
        await app.close()


@pytest.fixture
async def keys(corral_app: Corral) -> Keys:
    _, a = await create_key(corral_app.store, "acme")
    _, b = await create_key(corral_app.store, "globex")
    _, admin = await create_key(corral_app.store, "ops", admin=True)
    return Keys(a, b, admin)


@pytest.fixture
def settings() -> ApiSettings:
    return ApiSettings(
        stream_poll_interval=0.02, key_cache_ttl=0, max_body_bytes=64 * 1024, metrics_settle=0
    )


@pytest.fixture
def api(corral_app: Corral, settings: ApiSettings) -> FastAPI:
    return create_api(corral_app, settings)


@pytest.fixture
async def client(api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as c:
        yield c


@pytest.fixture
async def worker(corral_app: Corral) -> AsyncIterator[None]:
    """A worker executing runs in this event loop while the test runs."""
    w = corral_app.worker(concurrency=8, poll_interval=0.02, drain_timeout=2)
    task = asyncio.create_task(w.run())
    try:
        yield
    finally:
        w.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
