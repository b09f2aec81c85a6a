"""Running the service: uvicorn and embedded workers in one event loop, stopped together.

uvicorn's own signal handling is turned off: on SIGTERM/SIGINT the server stops accepting
and closes its connections while every worker drains (finishing or releasing its runs), and
only then does ``run_service`` return. (uvicorn's handler would re-raise the signal once the
server is down, ending the process before the workers drain.) The event streams are ended
first, each with its last event: uvicorn would wait for them, as for any open response, up
to its graceful timeout, then cancel them without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence

import uvicorn

from corral.api.service import close_streams, create_api
from corral.api.settings import ApiSettings
from corral.app import Corral
from corral.worker import Worker


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(server: uvicorn.Server) -> None:
    try:
        await server.serve()
    except SystemExit as exc:
        # uvicorn exits the process when it cannot start (a port in use, a host that does not
        # resolve): make it an error of this call, reported as such, not a silent exit code
        raise RuntimeError(f"the HTTP server could not start (exit {exc.code})") from exc


async def run_service(
    app: Corral,
    settings: ApiSettings,
    workers: Sequence[Worker],
    *,
    host: str,
    port: int,
    access_log: bool = False,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or until the server or a worker stops on its own).
    ``on_listening`` is called with the base URL once the socket is bound (``port`` 0 picks a
    free port). Raises RuntimeError when the server cannot start."""
    api = create_api(app, settings, schedulers=app.resources)
    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(_serve(server), name="corral-http")
    running = [
        asyncio.create_task(w.run(), name=f"corral-worker-{i}") for i, w in enumerate(workers)
    ]
    try:
        while not server.started:
            if serving.done():
                raise RuntimeError(f"cannot serve on {host}:{port} (see the log above)")
            await asyncio.sleep(0.01)
        if on_listening is not None:
            on_listening(f"http://{host}:{_bound_port(server) or port}")
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopper, *running}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    finally:
        await close_streams(api)
        server.should_exit = True
        for w in workers:
            w.stop()
        results = await asyncio.gather(serving, *running, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(
            result, asyncio.CancelledError | SystemExit
        ):
            raise result


def _bound_port(server: uvicorn.Server) -> int | None:
    for s in getattr(server, "servers", []):
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    return None
