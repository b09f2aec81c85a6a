"""An ASGI app served in-process on a free localhost port, stopped on request (the demo's
simulated provider). uvicorn's signal handling is off: the demo decides when to stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class InProcessServer:
    def __init__(self, app: Any, *, host: str = "127.0.0.1", name: str = "server") -> None:
        config = uvicorn.Config(
            app, host=host, port=0, log_config=None, access_log=False, lifespan="off"
        )
        self.host = host
        self.name = name
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        for s in getattr(self._server, "servers", []):
            for sock in s.sockets:
                return f"http://{self.host}:{int(sock.getsockname()[1])}"
        raise RuntimeError(f"{self.name} is not listening")

    async def start(self) -> str:
        self._task = asyncio.create_task(self._server.serve(), name=f"corral-demo-{self.name}")
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError(f"{self.name} could not start")
            await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
