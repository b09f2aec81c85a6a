"""Operations routes: queue statistics with a suggested worker count, the workers, Prometheus
metrics, liveness and readiness, and the dashboard page."""

# no `from __future__ import annotations`: FastAPI reads the route signatures, whose
# annotations name the per-instance `Auth` dependency built in the router function

import asyncio
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST

from corral.api.auth import Principal
from corral.api.context import Service, error_responses, principal_dependency
from corral.api.metrics import suggest
from corral.api.schemas import Health, QueuesOut, TenantQueue, WorkerOut, WorkersOut
from corral.errors import Forbidden, StoreUnavailable, Unauthorized
from corral.models import QueueStats


def _visible_stats(stats: QueueStats, who: Principal) -> QueueStats:
    if who.admin:
        return stats
    tenants = tuple(t for t in stats.tenants if t.tenant == who.tenant)
    return QueueStats(
        tenants=tenants,
        queued=sum(t.queued for t in tenants),
        in_flight=sum(t.in_flight for t in tenants),
        waiting=0,
        oldest_queued_age=max((t.oldest_queued_age for t in tenants), default=0.0),
        global_cap=stats.global_cap,
        by_status={},  # counts across all tenants: admin keys only
    )


def operations_router(svc: Service) -> APIRouter:
    router = APIRouter()
    principal = principal_dependency(svc)
    Auth = Annotated[Principal, Depends(principal)]

    @router.get(
        "/v1/queues",
        response_model=QueuesOut,
        tags=["operations"],
        responses=error_responses(401, 503),
        summary="Queue depth, oldest age and in flight per tenant",
    )
    async def queues(who: Auth) -> QueuesOut:
        stats = _visible_stats(await svc.app.stats(), who)
        return QueuesOut(
            tenant=None if who.admin else who.tenant,
            tenants=[TenantQueue.of(t) for t in stats.tenants],
            queued=stats.queued,
            in_flight=stats.in_flight,
            oldest_queued_age=stats.oldest_queued_age,
            global_cap=stats.global_cap,
            by_status=stats.by_status,
            age_target=svc.settings.age_target,
            slots_per_worker=svc.settings.slots_per_worker,
            suggested_workers=suggest(stats, svc.settings),
        )

    @router.get(
        "/v1/workers",
        response_model=WorkersOut,
        tags=["operations"],
        responses=error_responses(401, 403, 503),
        summary="The workers, as each last reported itself (admin key)",
        description="Every worker on the database: running, draining or lost (not heard from "
        "for a lease TTL; shown for an hour), its slots, busy slots, stuck agents and runs "
        "completed.",
    )
    async def workers(who: Auth) -> WorkersOut:
        if not who.admin:
            raise Forbidden("the workers are shown to admin keys only")
        now = svc.app.store.clock()
        return WorkersOut(workers=[WorkerOut.of(w, now) for w in await svc.app.workers()])

    metrics_doc: dict[int | str, dict[str, Any]] = {
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition.",
        }
    }
    if svc.settings.public_metrics:

        @router.get(
            "/metrics",
            response_class=Response,
            tags=["operations"],
            responses={**metrics_doc, **error_responses(503)},
            summary="Prometheus",
        )
        async def public_metrics() -> Response:
            await svc.app.open()
            return Response(await svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
    else:

        @router.get(
            "/metrics",
            response_class=Response,
            tags=["operations"],
            responses={**metrics_doc, **error_responses(401, 503)},
            summary="Prometheus metrics (admin key)",
        )
        async def admin_metrics(who: Auth) -> Response:
            if not who.admin:
                raise Unauthorized("/metrics needs an admin key")
            return Response(await svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/healthz", response_model=Health, tags=["operations"], summary="Liveness")
    async def healthz() -> Health:
        return Health(status="ok")

    #: the ping /readyz waits for, until it has answered
    pinging: asyncio.Task[None] | None = None

    @router.get(
        "/readyz",
        response_model=Health,
        tags=["operations"],
        responses=error_responses(503),
        summary="Readiness: the database answers",
    )
    async def readyz() -> Health:
        # One ping at a time, answered within READY_WITHIN: a database that stopped answering
        # without closing its connections (frozen, or cut off) left the probe hanging, and
        # every probe after it took another pooled connection.
        nonlocal pinging
        if pinging is None or pinging.done():
            pinging = asyncio.create_task(_ping(svc))
            pinging.add_done_callback(_retrieve)
        done, _ = await asyncio.wait([pinging], timeout=READY_WITHIN)
        if not done:
            raise StoreUnavailable(f"the database did not answer within {READY_WITHIN:g} s")
        pinging.result()
        return Health(status="ready")

    page = resources.files("corral.api").joinpath("static", "dashboard.html").read_text()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    return router


#: seconds /readyz waits for the database's answer
READY_WITHIN = 2.0


async def _ping(svc: Service) -> None:
    await svc.app.open()
    await svc.app.store.ping()


def _retrieve(task: "asyncio.Task[None]") -> None:
    """Read the outcome of a ping no probe waited for to the end (else asyncio logs it)."""
    if not task.cancelled():
        task.exception()
