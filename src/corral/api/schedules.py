"""The schedule routes under ``/v1``: list the recurring schedules (those declared in the
app's code and those created at run time), create one, read, pause, resume or delete one.
A tenant key sees and changes its own tenant's only; an admin key names the tenant with
?tenant= (default: its own)."""

# no `from __future__ import annotations`: FastAPI reads the route signatures, whose
# annotations name the per-instance `Auth` dependency built in the router function

from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Path, Response

from corral.api.auth import Principal
from corral.api.context import (
    ActingTenant,
    Service,
    TenantFilter,
    error_responses,
    principal_dependency,
)
from corral.api.schemas import ScheduleOut, ScheduleRequest, SchedulesOut
from corral.dispatch.schedule import ScheduleState, stored_name
from corral.errors import ScheduleNotFound
from corral.values import MAX_NAME

ScheduleName = Annotated[
    str, Path(min_length=1, max_length=MAX_NAME, description="The name within the tenant.")
]


def schedules_router(svc: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["schedules"])
    principal = principal_dependency(svc)
    Auth = Annotated[Principal, Depends(principal)]
    app = svc.app

    @router.get(
        "/schedules",
        response_model=SchedulesOut,
        responses=error_responses(401, 503),
        summary="Recurring schedules, their last and next ticks",
        description="The schedules of the app this service runs (`app.schedule`) and those "
        "created with POST /v1/schedules; a tenant key sees its own tenant's only.",
    )
    async def list_schedules(who: Auth, tenant: TenantFilter = None) -> SchedulesOut:
        if not who.admin:
            if tenant is not None and tenant != who.tenant:
                return SchedulesOut(schedules=[])
            tenant = who.tenant
        states = await app.schedule_states(tenant)
        return SchedulesOut(schedules=[ScheduleOut.of(state) for state in states])

    @router.post(
        "/schedules",
        status_code=201,
        response_model=ScheduleOut,
        responses=error_responses(401, 403, 409, 422, 503),
        summary="Create a recurring schedule for the caller's tenant",
        description="Every tick of `cron` (in `tz`) or of `every` seconds submits a run of "
        "`agent` with `input` for the caller's tenant, through the same fair dispatch as any "
        "run. The first run is at the first tick after now. A name the tenant uses already, "
        "or a tenant at its limit of schedules, is a 409. An admin key creates one for "
        "another tenant with ?tenant=.",
    )
    async def create_schedule(
        body: ScheduleRequest, who: Auth, response: Response, tenant: ActingTenant = None
    ) -> ScheduleOut:
        owner = who.acting_for(tenant)
        schedule = await app.create_schedule(
            body.name,
            body.agent,
            body.input,
            cron=body.cron,
            every=body.every,
            tz=body.tz,
            tenant=owner,
            priority=body.priority,
            max_attempts=body.max_attempts,
            timeout=body.timeout,
            start_within=body.start_within,
            catch_up=body.catch_up,
        )
        response.headers["Location"] = f"/v1/schedules/{quote(body.name, safe='')}" + (
            "" if owner == who.tenant else f"?{urlencode({'tenant': owner})}"
        )
        now = app.store.clock()
        return ScheduleOut.of(
            ScheduleState(schedule, schedule.latest_tick(now), None, schedule.next_tick(now))
        )

    async def state_of(tenant: str, name: str) -> ScheduleOut:
        full = stored_name(tenant, name)
        for state in await app.schedule_states(tenant):
            if state.schedule.name == full:
                return ScheduleOut.of(state)
        raise ScheduleNotFound(full)

    @router.get(
        "/schedules/{name}",
        response_model=ScheduleOut,
        responses=error_responses(401, 403, 404, 503),
        summary="One of the caller's tenant's schedules",
        description="A schedule created with POST /v1/schedules (the `Location` it answered "
        "with), its last and next ticks. An admin key names the tenant with ?tenant= "
        "(default: its own).",
    )
    async def get_schedule(
        name: ScheduleName, who: Auth, tenant: ActingTenant = None
    ) -> ScheduleOut:
        return await state_of(who.acting_for(tenant), name)

    @router.post(
        "/schedules/{name}/pause",
        response_model=ScheduleOut,
        responses=error_responses(401, 403, 404, 503),
        summary="Pause one of the caller's tenant's schedules",
        description="Its ticks get no run until it is resumed. An admin key names the tenant "
        "with ?tenant= (default: its own).",
    )
    async def pause_schedule(
        name: ScheduleName, who: Auth, tenant: ActingTenant = None
    ) -> ScheduleOut:
        owner = who.acting_for(tenant)
        await app.pause_schedule(name, tenant=owner)
        return await state_of(owner, name)

    @router.post(
        "/schedules/{name}/resume",
        response_model=ScheduleOut,
        responses=error_responses(401, 403, 404, 503),
        summary="Resume a paused schedule",
        description="Its next tick gets a run; the ticks it was paused through do not.",
    )
    async def resume_schedule(
        name: ScheduleName, who: Auth, tenant: ActingTenant = None
    ) -> ScheduleOut:
        owner = who.acting_for(tenant)
        await app.resume_schedule(name, tenant=owner)
        return await state_of(owner, name)

    @router.delete(
        "/schedules/{name}",
        status_code=204,
        responses=error_responses(401, 403, 404, 503),
        summary="Delete one of the caller's tenant's schedules",
        description="No tick after this gets a run; runs submitted already stay. An admin key "
        "names the tenant with ?tenant= (default: its own).",
    )
    async def delete_schedule(
        name: ScheduleName, who: Auth, tenant: ActingTenant = None
    ) -> Response:
        await app.delete_schedule(name, tenant=who.acting_for(tenant))
        return Response(status_code=204)

    return router
