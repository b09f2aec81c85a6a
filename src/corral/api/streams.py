"""Server-Sent Events of a run's journal, live, resumable, ending with the run.

Each journal entry is one event ``journal`` whose ``id`` is its sequence number, so a client
that reconnects with ``Last-Event-ID: <seq>`` gets exactly the entries after it — nothing
lost, nothing repeated. When the run has ended, the stream sends the entries still unsent,
then one ``end`` event with the run's final status, result and error, and closes.

The stream reads the run, then the journal after the last sent seq, then waits until the
service's ``RunWatcher`` (watch.py: one poll for all open streams) sees the run's journal grow
past that seq, or the run end. It reads the run *before* the journal: a run seen ended has no
writer left (writes are fenced), so the journal read after it is complete. An idle stream
sends a comment every ``keepalive`` seconds, which also notices a client that went away.

A stream outlives the request that authorised it, so it asks again (``authorize``, the key
resolver with its cache) every ``authorize_every`` seconds, whether or not it sent a comment:
a key revoked meanwhile ends the stream with an ``error`` event of code ``unauthorized``, the
code of the 401 the key now gets. The service asks as often as its key cache forgets
(``key_cache_ttl``, at least once a second and at most once a keepalive), so a revoked key's
streams end within about two of its TTLs, as its requests fail within one.

When the service stops, its watcher is closed and every stream ends at its next wait with an
``error`` event of code ``shutdown``: the client reconnects (to another instance, or to this
one restarted) with ``Last-Event-ID``. Without it uvicorn would wait for the streams, then
cancel them mid-response.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import StreamingResponse

from corral.api.watch import RunWatcher
from corral.errors import CorralError, ShutdownError, StoreUnavailable, Unauthorized
from corral.models import RunStatus
from corral.store import Store

log = logging.getLogger(__name__)

PAGE = 500
#: a stream asks for its key at most this often, even with the key cache off (its TTL 0)
KEY_RECHECK_FLOOR = 1.0
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _event(name: str, data: dict[str, Any], *, with_id: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
    }
    if with_id:
        properties["id"] = {"type": "string", "pattern": "^[0-9]+$"}
    return {
        "type": "object",
        "properties": properties,
        "required": ["event", "data", *(["id"] if with_id else [])],
    }


_STATUS = {"enum": [s.value for s in RunStatus]}

#: one event of a run's stream, as OpenAPI 3.1 documents a text/event-stream item
EVENT_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _event(
            "accepted",
            {
                "type": "object",
                "required": ["run_id", "status"],
                "properties": {"run_id": {"type": "string"}, "status": _STATUS},
            },
        ),
        _event(
            "journal",
            {
                "type": "object",
                "required": ["seq", "kind", "name", "data", "epoch", "created_at"],
                "properties": {
                    "seq": {"type": "integer"},
                    "kind": {"type": "string"},
                    "name": {"type": ["string", "null"]},
                    "data": {},
                    "epoch": {"type": "integer"},
                    "created_at": {"type": "number"},
                },
            },
            with_id=True,
        ),
        _event(
            "end",
            {
                "type": "object",
                "required": ["run_id", "status"],
                "properties": {
                    "run_id": {"type": "string"},
                    "status": {"anyOf": [_STATUS, {"type": "null"}]},
                    "result": {},
                    "error": {},
                    "last_seq": {"type": "integer"},
                },
            },
        ),
        _event(
            "error",
            {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
        ),
    ]
}


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def sse(event: str, data: Any, *, event_id: int | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


def _error_event(exc: CorralError) -> str:
    """The ``error`` event that ends a stream: the code and message of ``exc``, as the body
    of an HTTP error gives them."""
    return sse("error", {"code": exc.code, "message": str(exc)})


async def journal_events(
    store: Store,
    run_id: str,
    *,
    after: int,
    watcher: RunWatcher,
    keepalive: float,
    first: str | None = None,
    authorize: Callable[[], Awaitable[object]] | None = None,
    authorize_every: float | None = None,
) -> AsyncIterator[str]:
    """The events of ``run_id`` after seq ``after``. ``authorize`` raises ``Unauthorized``
    once the caller's key is no longer valid; it is called every ``authorize_every`` seconds
    (default: every ``keepalive``; the request that opened the stream has just checked it)."""
    if first is not None:
        yield first
    every = keepalive if authorize_every is None else authorize_every
    last_sent = time.monotonic()
    authorize_at = last_sent + every if authorize is not None else math.inf
    while True:
        try:
            if authorize is not None and time.monotonic() >= authorize_at:
                await authorize()
                authorize_at = time.monotonic() + every
            run = await store.get(run_id)
            if run is None:
                yield sse("end", {"run_id": run_id, "status": None, "error": "run not found"})
                return
            while True:
                entries = await store.journal(run_id, after=after, limit=PAGE)
                for e in entries:
                    yield sse(
                        "journal",
                        {
                            "seq": e.seq,
                            "kind": e.kind,
                            "name": e.name,
                            "data": e.data,
                            "epoch": e.epoch,
                            "created_at": e.created_at,
                        },
                        event_id=e.seq,
                    )
                    after = e.seq
                    last_sent = time.monotonic()
                if len(entries) < PAGE:
                    break
            if run.done:
                # the journal's own last entry: a client's cursor past it (Last-Event-ID: 99)
                # was echoed as the last sequence number
                length = (await store.progress([run_id])).get(run_id, (run.status, after))[1]
        except Unauthorized as exc:
            yield _error_event(exc)
            return
        except StoreUnavailable as exc:
            log.warning("event stream of %s stopped: %s", run_id, exc)
            yield _error_event(exc)
            return
        if run.done:
            yield sse(
                "end",
                {
                    "run_id": run.id,
                    "status": run.status.value,
                    "result": run.result,
                    "error": run.error,
                    "last_seq": min(after, length),
                },
            )
            return
        if time.monotonic() - last_sent >= keepalive:
            yield ": keepalive\n\n"
            last_sent = time.monotonic()
        wake_at = min(last_sent + keepalive, authorize_at)
        await watcher.wait(run_id, after, wake_at - time.monotonic())
        if watcher.closed:
            yield _error_event(
                ShutdownError("the service is stopping: reconnect with Last-Event-ID to resume")
            )
            return


def event_stream(
    events: AsyncIterator[str], headers: dict[str, str] | None = None
) -> EventStreamResponse:
    return EventStreamResponse(events, headers={**HEADERS, **(headers or {})})
