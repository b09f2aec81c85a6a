"""What every route of one service instance shares, and the dependencies that read a request:
the caller's principal (from its API key) and validated path, query and header values."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator

from corral.api.auth import KeyResolver, Principal
from corral.api.batching import SubmitBatcher
from corral.api.metrics import ServiceMetrics
from corral.api.schemas import ErrorBody, clean_name, clean_text
from corral.api.settings import ApiSettings
from corral.api.watch import RunWatcher
from corral.app import Corral
from corral.values import MAX_NAME


@dataclass(frozen=True, slots=True)
class Service:
    app: Corral
    settings: ApiSettings
    keys: KeyResolver
    metrics: ServiceMetrics
    submits: SubmitBatcher
    #: one poll of the store for all open event streams
    watcher: RunWatcher


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `corral keys create`, as `Authorization: Bearer <key>`.",
)

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def principal_dependency(svc: Service) -> Callable[..., Awaitable[Principal]]:
    async def principal(credentials: Credentials) -> Principal:
        await svc.app.open()
        return await svc.keys.resolve(None if credentials is None else credentials.credentials)

    return principal


RunId = Annotated[
    str,
    Path(min_length=1, max_length=MAX_NAME, description="A run id."),
    AfterValidator(clean_text),
]
AgentFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=MAX_NAME, description="Only runs of this agent."),
    AfterValidator(clean_name),
]
TenantFilter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_NAME,
        description="Only this tenant's runs (admin keys; a tenant key sees only its own).",
    ),
    AfterValidator(clean_name),
]
ActingTenant = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_NAME,
        description="The tenant to act for: any, with an admin key (default: the key's own); "
        "a tenant key naming another gets 403.",
    ),
    AfterValidator(clean_name),
]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_NAME,
        description="`next_cursor` of the previous page: runs older than this id.",
    ),
    AfterValidator(lambda v: v if v is None else clean_text(v)),
]
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_NAME,
        description="Same as the body's idempotency_key (they must agree when both given).",
    ),
    AfterValidator(lambda v: v if v is None else clean_text(_utf8_header(v))),
]
Seq = Annotated[int, Query(ge=0, le=2**53, description="Only entries after this sequence number.")]


def _utf8_header(value: str) -> str:
    """A header's text as its sender wrote it: HTTP gives bytes, which Starlette decodes as
    Latin-1, so a key "café" sent as UTF-8 was stored as "cafÃ©" (and disagreed with the same
    key in the body)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise ValueError("must be UTF-8 text") from None


ERROR_DESCRIPTIONS = {
    401: "No valid API key.",
    403: "A tenant key named another tenant (an admin key acts for any).",
    404: "No such run (or another tenant's).",
    409: "The run is not in a state this allows.",
    413: "Request body over the configured limit.",
    422: "Invalid request.",
    429: "Queue quota full; retry after Retry-After seconds.",
    503: "The database is unreachable.",
}


def error_responses(*statuses: int, streaming: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses: the one JSON error body. A ``streaming`` route (whose
    response class is text/event-stream) names the JSON media type itself, since FastAPI
    would otherwise document its errors as the route's media type."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": ERROR_DESCRIPTIONS[status]}
        if streaming:
            entry["content"] = {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
            }
        else:
            entry["model"] = ErrorBody
        if status == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            }
        out[status] = entry
    return out
