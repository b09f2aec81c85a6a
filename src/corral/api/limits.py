"""Request body limit, as plain ASGI middleware: a body over ``max_bytes`` is answered 413
before the application reads any of it. The body is read here (at most ``max_bytes`` + one
chunk) and handed on whole; afterwards the application's ``receive`` reaches the server again,
so a streaming response still hears the client disconnect."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.errors import error_body
from corral.errors import PayloadTooLarge


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # the client went away before sending its body: let the app see that
                chunks.clear()
                await self.app(scope, _replay(None, receive, message), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive, None), send)

    async def _too_large(self, send: Send) -> None:
        payload = json.dumps(
            error_body(
                PayloadTooLarge.code, f"request body over the limit of {self.max_bytes} bytes"
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes | None, receive: Receive, first: Message | None) -> Receive:
    pending: list[Any] = []
    if body is not None:
        pending.append({"type": "http.request", "body": body, "more_body": False})
    elif first is not None:
        pending.append(first)

    async def replay() -> Message:
        if pending:
            message: Message = pending.pop()
            return message
        return await receive()

    return replay
