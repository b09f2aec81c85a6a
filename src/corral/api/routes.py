"""The run routes under ``/v1``: submit (202 + run id, or the event stream of the new run),
read, list, cancel, retry, journal, children, events. Every route is scoped by the caller's key:
another tenant's run is a 404."""

# no `from __future__ import annotations`: FastAPI reads the route signatures, whose
# annotations name the per-instance `Auth` dependency built in the router function

import time
from collections import Counter
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.security import HTTPAuthorizationCredentials

from corral.api.auth import Principal
from corral.api.context import (
    AgentFilter,
    Credentials,
    Cursor,
    IdempotencyHeader,
    RunId,
    Seq,
    Service,
    TenantFilter,
    error_responses,
    principal_dependency,
)
from corral.api.schemas import (
    BatchSubmitRequest,
    BatchSubmitResponse,
    JournalEntryOut,
    JournalPage,
    RunChildren,
    RunOut,
    RunPage,
    SubmitRequest,
    SubmitResponse,
)
from corral.api.streams import (
    EVENT_SCHEMA,
    KEY_RECHECK_FLOOR,
    EventStreamResponse,
    event_stream,
    journal_events,
    sse,
)
from corral.errors import BackpressureError, InvalidInput
from corral.models import Run, RunStatus

SSE_DOC: dict[str, Any] = {
    "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
    "description": (
        "Server-Sent Events: `journal` events (id = journal seq), then one `end` event with "
        "the run's final status, result and error; or, when the stream cannot go on (its key "
        "revoked, the database unreachable, the service stopping), one `error` event "
        "`{code, message}`."
    ),
}


def runs_router(svc: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["runs"])
    Auth = Annotated[Principal, Depends(principal_dependency(svc))]
    app = svc.app
    settings = svc.settings

    async def visible_run(who: Principal, run_id: str) -> Run:
        return who.visible(await app.get(run_id))

    async def accepted_status(run_id: str, idempotency_key: str | None) -> RunStatus:
        """A run just accepted is queued, unless its idempotency key named an existing run:
        that run's status is read."""
        return RunStatus.QUEUED if idempotency_key is None else (await app.get(run_id)).status

    def stream_of(
        run_id: str,
        after: int,
        credentials: HTTPAuthorizationCredentials | None,
        first: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> EventStreamResponse:
        # the key is asked again while the stream is open (a revoked key ends it); without
        # one there is nothing to ask
        authorize = (
            None if credentials is None else partial(svc.keys.resolve, credentials.credentials)
        )
        events = journal_events(
            app.store,
            run_id,
            after=after,
            watcher=svc.watcher,
            keepalive=settings.stream_keepalive,
            first=first,
            authorize=authorize,
            # as often as the key cache forgets (most asks are answered from it), so that a
            # revoked key's streams end about when its requests start to fail
            authorize_every=min(
                settings.stream_keepalive, max(settings.key_cache_ttl, KEY_RECHECK_FLOOR)
            ),
        )
        return event_stream(events, headers)

    @router.post(
        "/runs",
        status_code=202,
        response_model=SubmitResponse,
        responses={
            200: {
                **SSE_DOC,
                "description": "With ?stream=true: an `accepted` event with the "
                "run id, then the run's events as for GET /v1/runs/{run_id}/events.",
            },
            202: {
                "description": "Accepted; `Location` names the new run.",
                "headers": {
                    "Location": {"description": "/v1/runs/{run_id}", "schema": {"type": "string"}},
                },
            },
            **error_responses(401, 403, 413, 422, 429, 503),
        },
        summary="Submit a run",
    )
    async def submit_run(
        body: SubmitRequest,
        who: Auth,
        credentials: Credentials,
        response: Response,
        idempotency_key: IdempotencyHeader = None,
        stream: Annotated[
            bool,
            Query(
                description="Answer with the run's event stream instead of 202; a worker executes "
                "the run, and disconnecting does not cancel it.",
            ),
        ] = False,
    ) -> Any:
        key = body.idempotency_key
        if idempotency_key is not None:
            if key is not None and key != idempotency_key:
                raise InvalidInput("Idempotency-Key header and body idempotency_key differ")
            key = idempotency_key
        tenant = who.acting_for(body.tenant)
        started = time.perf_counter()
        try:
            run_id = await svc.submits.submit(body.run_fields(tenant, key))
        except BackpressureError:
            svc.metrics.observe_backpressure(tenant)
            raise
        svc.metrics.observe_submit(time.perf_counter() - started, {tenant: 1})
        status = await accepted_status(run_id, key)
        location = f"/v1/runs/{run_id}"
        if stream:
            first = sse("accepted", {"run_id": run_id, "status": status.value})
            headers = {"Location": location, "X-Run-Id": run_id}
            return stream_of(run_id, 0, credentials, first, headers)
        response.headers["Location"] = location
        return SubmitResponse(run_id=run_id, status=status)

    @router.post(
        "/runs/batch",
        status_code=202,
        response_model=BatchSubmitResponse,
        responses=error_responses(401, 403, 413, 422, 429, 503),
        summary="Submit many runs at once",
        description="Up to 1,000 runs in one transaction: all are accepted, or none is (a 422 "
        "names the first bad run by its index; a 429 means the batch would take the tenant "
        "past its queued quota). A run with an idempotency key already used by the tenant "
        "answers with the existing run and its status. Keys go on each run: an "
        "Idempotency-Key header is refused (a 422), since it could key only one of them.",
    )
    async def submit_batch(
        body: BatchSubmitRequest, who: Auth, idempotency_key: IdempotencyHeader = None
    ) -> BatchSubmitResponse:
        if idempotency_key is not None:
            # ignored, a retried batch was accepted twice
            raise InvalidInput(
                "a batch takes no Idempotency-Key header: give each run its idempotency_key"
            )
        # every run's tenant is checked before any is written: the batch is all or nothing
        tenants = [who.acting_for(run.tenant) for run in body.runs]
        started = time.perf_counter()
        try:
            run_ids = await app.submit_many(
                [
                    run.run_fields(tenant, run.idempotency_key)
                    for run, tenant in zip(body.runs, tenants, strict=True)
                ]
            )
        except BackpressureError as exc:
            # the tenant whose quota refused the batch; the others' runs were only refused
            # with it (all or nothing)
            for tenant in [exc.tenant] if exc.tenant else sorted(set(tenants)):
                svc.metrics.observe_backpressure(tenant)
            raise
        svc.metrics.observe_submit(time.perf_counter() - started, Counter(tenants))
        # the runs whose keys may have named existing runs: their statuses in one read
        keyed = [
            run_id
            for run, run_id in zip(body.runs, run_ids, strict=True)
            if run.idempotency_key is not None
        ]
        progress = await app.store.progress(keyed) if keyed else {}
        statuses = [
            progress[run_id][0]
            if run_id in progress
            else await accepted_status(run_id, run.idempotency_key)
            for run, run_id in zip(body.runs, run_ids, strict=True)
        ]
        answers = zip(run_ids, statuses, strict=True)
        return BatchSubmitResponse(runs=[SubmitResponse(run_id=r, status=s) for r, s in answers])

    @router.get(
        "/runs",
        response_model=RunPage,
        responses=error_responses(401, 422, 503),
        summary="List runs, newest first",
    )
    async def list_runs(
        who: Auth,
        status: Annotated[RunStatus | None, Query(description="Only runs in this status.")] = None,
        agent: AgentFilter = None,
        tenant: TenantFilter = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        cursor: Cursor = None,
    ) -> RunPage:
        if not who.admin:
            if tenant is not None and tenant != who.tenant:
                return RunPage(runs=[], next_cursor=None)
            tenant = who.tenant
        runs = await app.list_runs(
            tenant=tenant, status=status, agent=agent, limit=limit, before=cursor
        )
        return RunPage(
            runs=[RunOut.of(r) for r in runs],
            next_cursor=runs[-1].id if len(runs) == limit else None,
        )

    @router.get(
        "/runs/{run_id}",
        response_model=RunOut,
        responses=error_responses(401, 404, 422, 503),
        summary="Get a run",
    )
    async def get_run(run_id: RunId, who: Auth) -> RunOut:
        return RunOut.of(await visible_run(who, run_id))

    @router.post(
        "/runs/{run_id}/cancel",
        response_model=RunOut,
        responses=error_responses(401, 404, 422, 503),
        summary="Cancel a run and its descendants",
    )
    async def cancel_run(run_id: RunId, who: Auth) -> RunOut:
        await visible_run(who, run_id)
        return RunOut.of(await app.cancel(run_id))

    @router.post(
        "/runs/{run_id}/retry",
        response_model=RunOut,
        responses=error_responses(401, 404, 409, 422, 429, 503),
        summary="Queue a dead-lettered (failed) root run again",
        description="The run gets `attempts` more attempts (default: as many as it was "
        "submitted with) and replays its journal, so steps that succeeded are not redone. "
        "409 `run_not_retryable` for a run that has not failed or is a child run; 429 over "
        "the tenant's queued quota (the run stays failed).",
    )
    async def retry_run(
        run_id: RunId,
        who: Auth,
        attempts: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    ) -> RunOut:
        run = await visible_run(who, run_id)
        try:
            return RunOut.of(await app.retry(run_id, attempts=attempts))
        except BackpressureError:
            svc.metrics.observe_backpressure(run.tenant)
            raise

    @router.get(
        "/runs/{run_id}/journal",
        response_model=JournalPage,
        responses=error_responses(401, 404, 422, 503),
        summary="Read a run's journal",
    )
    async def run_journal(
        run_id: RunId,
        who: Auth,
        after: Seq = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> JournalPage:
        await visible_run(who, run_id)
        entries = await app.store.journal(run_id, after=after, limit=limit)
        return JournalPage(
            run_id=run_id,
            entries=[JournalEntryOut.of(e) for e in entries],
            next_after=entries[-1].seq if entries else after,
        )

    @router.get(
        "/runs/{run_id}/children",
        response_model=RunChildren,
        responses=error_responses(401, 404, 422, 503),
        summary="Runs spawned by a run",
    )
    async def run_children(
        run_id: RunId,
        who: Auth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RunChildren:
        await visible_run(who, run_id)
        children = await app.store.children(run_id, limit=limit)
        return RunChildren(
            run_id=run_id, children=[RunOut.of(c) for c in children if who.can_see(c)]
        )

    @router.get(
        "/runs/{run_id}/events",
        response_class=Response,  # documented by hand: see SSE_DOC
        responses={200: SSE_DOC, **error_responses(401, 404, 422, 503, streaming=True)},
        summary="Stream a run's journal (Server-Sent Events)",
    )
    async def run_events(
        run_id: RunId,
        who: Auth,
        credentials: Credentials,
        after: Seq = 0,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                max_length=20,
                description="Resume after this journal seq (the id of the last event received); "
                "takes precedence over ?after=.",
            ),
        ] = None,
    ) -> EventStreamResponse:
        if last_event_id is not None and last_event_id.strip():
            try:
                after = int(last_event_id.strip())
            except ValueError:
                raise InvalidInput("Last-Event-ID must be a journal sequence number") from None
            if not 0 <= after <= 2**53:
                raise InvalidInput("Last-Event-ID out of range")
        await visible_run(who, run_id)
        return stream_of(run_id, after, credentials)

    return router
