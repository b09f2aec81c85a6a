"""One error shape for every failure: ``{"error": {"code": ..., "message": ...}}``.

The status of a ``CorralError`` comes from its class (first match in ``STATUS``); FastAPI's own
validation errors (a 422 ``invalid_input`` whose message names each refused value by where it
is: ``runs.3.priority``, ``query.tenant``) and Starlette's HTTP errors are reshaped into the
same body. Another
tenant's run is a ``RunNotFound`` (404), never a 403, so a key learns nothing of runs it may
not see.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from corral.errors import (
    BackpressureError,
    BudgetExceeded,
    CorralError,
    FanoutLimitError,
    Forbidden,
    InvalidInput,
    LeaseLost,
    PayloadTooLarge,
    RunNotFound,
    RunNotRetryable,
    ScheduleExists,
    ScheduleLimitReached,
    ScheduleNotFound,
    ShutdownError,
    StoreUnavailable,
    Unauthorized,
)

log = logging.getLogger(__name__)


STATUS: tuple[tuple[type[CorralError], int], ...] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (RunNotFound, 404),
    (ScheduleNotFound, 404),
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (BackpressureError, 429),
    (BudgetExceeded, 409),
    (RunNotRetryable, 409),
    (ScheduleExists, 409),
    (ScheduleLimitReached, 409),
    (FanoutLimitError, 409),
    (LeaseLost, 409),
    (StoreUnavailable, 503),
    (ShutdownError, 503),
)

#: codes for Starlette's own HTTP errors (unknown route, wrong method, unparsable body)
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def status_of(exc: CorralError) -> int:
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def corral_error_response(exc: CorralError) -> JSONResponse:
    status = status_of(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, BackpressureError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    elif isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if status >= 500:
        log.warning("%s: %s", exc.code, exc)
    return error_response(status, exc.code, str(exc), headers or None)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {_reason(err)}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _reason(err: Mapping[str, Any]) -> str:
    """Why pydantic refused a value, said as corral's own refusals say it."""
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    loc = err.get("loc", ())
    if loc and loc[0] in ("query", "header") and err.get("input") == "":
        # ?tenant= is a client that meant no filter more often than a tenant named "", and
        # pydantic said "String should have at least 1 character", or for ?limit= "unable to
        # parse string as an integer", without saying that the value was empty (every query
        # parameter and header of the API may be left out); an enum's choices are kept
        part = "parameter" if loc[0] == "query" else "header"
        hint = f": {msg}" if err.get("type") == "enum" else ""
        return f"is empty (leave the {part} out, or give a value{hint})"
    return msg


def install_error_handlers(api: FastAPI) -> None:
    async def on_corral_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CorralError)
        return corral_error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, InvalidInput.code, _validation_message(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode: an invalid body, like any other
            return error_response(422, InvalidInput.code, f"invalid request body: {exc.detail}")
        code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error")

    api.add_exception_handler(CorralError, on_corral_error)
    api.add_exception_handler(RequestValidationError, on_validation_error)
    api.add_exception_handler(HTTPException, on_http_error)
    api.add_exception_handler(Exception, on_unexpected)
