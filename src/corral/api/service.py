"""``create_api``: the ASGI application of one corral service instance.

It wraps a ``Corral`` app (which the caller opens and closes; the first request opens it if
needed) and takes its settings as a frozen ``ApiSettings``. Everything an instance keeps —
the key cache, the metrics registry — lives on the objects made here, never in module state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from corral.api.auth import KeyResolver
from corral.api.batching import SubmitBatcher
from corral.api.context import Service
from corral.api.errors import install_error_handlers
from corral.api.limits import BodyLimit
from corral.api.metrics import SchedulerLike, ServiceMetrics
from corral.api.operations import operations_router
from corral.api.routes import runs_router
from corral.api.schedules import schedules_router
from corral.api.settings import ApiSettings
from corral.api.watch import RunWatcher
from corral.app import Corral


def _version() -> str:
    try:
        return version("corral")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def create_api(
    app: Corral,
    settings: ApiSettings | None = None,
    *,
    schedulers: Mapping[str, SchedulerLike] | None = None,
) -> FastAPI:
    """The HTTP API of ``app``. ``schedulers`` (name → contention scheduler) are exported on
    ``/metrics``."""
    settings = settings or ApiSettings()
    svc = Service(
        app=app,
        settings=settings,
        keys=KeyResolver(app.store, settings.key_cache_ttl),
        metrics=ServiceMetrics(app.store, settings, schedulers),
        submits=SubmitBatcher(app),
        watcher=RunWatcher(app.store, settings.stream_poll_interval),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await app.open()
        try:
            yield
        finally:
            await svc.watcher.close()

    api = FastAPI(
        title="corral",
        version=_version(),
        summary="Durable, fair, bounded runs of AI agents.",
        description=(
            "Submit runs (202 + run id), read, cancel and stream them. Every request carries "
            "an API key (`Authorization: Bearer <key>`); the key's tenant scopes everything. "
            'Errors are `{"error": {"code", "message"}}`.'
        ),
        lifespan=lifespan,
        # no Swagger UI or ReDoc: their pages load unpinned scripts from a CDN into the
        # origin where the dashboard keeps its API key (the schema is /openapi.json)
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(api)
    api.include_router(runs_router(svc))
    api.include_router(operations_router(svc))
    api.include_router(schedules_router(svc))
    api.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    api.state.watcher = svc.watcher
    return api


async def close_streams(api: FastAPI) -> None:
    """End the open event streams of ``api`` (from ``create_api``), each with an ``error``
    event ``shutdown``, and any opened later at its first wait. A server calls this before it
    stops: uvicorn waits for open responses (the lifespan's shutdown comes after), then cancels
    them."""
    watcher = api.state.watcher
    assert isinstance(watcher, RunWatcher)
    await watcher.close()
