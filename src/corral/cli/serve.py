"""``corral serve`` (the HTTP API and embedded workers in one process) and ``corral keys``
(API keys: create, list, revoke). This is the service's edge: the only place its settings
are read from options and environment variables."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterator

import click
import uvicorn
from rich.console import Console
from rich.table import Table

from corral.api import ApiSettings, create_api, create_key
from corral.app import Corral
from corral.cli.common import CliError, app_option, db_option, resolve_app, run_async, when
from corral.worker import Worker

console = Console()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` stops the server and the workers
    together (uvicorn's handler would re-raise the signal once the server is down, ending the
    process before the workers drain)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@click.command()
@app_option
@db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="CORRAL_HOST",
    help="Interface to listen on ($CORRAL_HOST).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    envvar="CORRAL_PORT",
    help="Port (0: any free port; $CORRAL_PORT).",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 1000),
    default=None,
    envvar="CORRAL_WORKERS",
    help="Workers embedded in this process; 0 for an API-only node "
    "(default: 1 with --app, else 0; $CORRAL_WORKERS).",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Run slots of each embedded worker.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0.1, max=86_400),
    default=None,
    help="Seconds a lease lasts without a heartbeat (default: the app's).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.001, max=3600),
    default=1.0,
    show_default=True,
    help="Longest an idle worker waits before looking again.",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0, max=86_400),
    default=30.0,
    show_default=True,
    help="On SIGTERM, seconds to let runs finish before releasing.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=1_048_576,
    show_default=True,
    envvar="CORRAL_MAX_BODY_BYTES",
    help="Larger request bodies get 413 ($CORRAL_MAX_BODY_BYTES).",
)
@click.option(
    "--age-target",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    envvar="CORRAL_AGE_TARGET",
    help="Queueing SLA in seconds, for the suggested worker count ($CORRAL_AGE_TARGET).",
)
@click.option(
    "--public-metrics",
    is_flag=True,
    envvar="CORRAL_PUBLIC_METRICS",
    help="Serve /metrics without a key (default: admin key required).",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@run_async
async def serve(
    app_path: str | None,
    db: str | None,
    host: str,
    port: int,
    workers: int | None,
    concurrency: int,
    lease_ttl: float | None,
    poll_interval: float,
    drain_timeout: float,
    max_body_bytes: int,
    age_target: float,
    public_metrics: bool,
    access_log: bool,
) -> None:
    """Serve the HTTP API (and run embedded workers) until SIGTERM/SIGINT."""
    app = resolve_app(app_path, db)
    if workers is None:
        workers = 1 if app.agents else 0
    if workers > 0 and not app.agents:
        raise CliError("--workers needs --app MODULE:ATTR with agents (or --workers 0)", 2)
    settings = ApiSettings(
        max_body_bytes=max_body_bytes,
        age_target=age_target,
        slots_per_worker=concurrency,
        public_metrics=public_metrics,
    )
    await app.open()
    try:
        embedded = [
            app.worker(
                concurrency=concurrency,
                lease_ttl=lease_ttl,
                poll_interval=poll_interval,
                drain_timeout=drain_timeout,
            )
            for _ in range(workers)
        ]
        await _run(app, settings, embedded, host, port, access_log)
    finally:
        await app.close()


async def _run(
    app: Corral,
    settings: ApiSettings,
    workers: list[Worker],
    host: str,
    port: int,
    access_log: bool,
) -> None:
    config = uvicorn.Config(
        create_api(app, settings),
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
    serving = asyncio.create_task(server.serve(), name="corral-http")
    running = [
        asyncio.create_task(w.run(), name=f"corral-worker-{i}") for i, w in enumerate(workers)
    ]
    try:
        while not server.started:
            if serving.done():
                raise CliError(f"cannot serve on {host}:{port} (see the log above)", 1)
            await asyncio.sleep(0.01)
        bound = _bound_port(server) or port
        click.echo(
            f"corral serve: listening on http://{host}:{bound} with {len(workers)} "
            f"worker(s) on {app.url}",
            err=True,
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopper, *running}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    finally:
        server.should_exit = True
        for w in workers:
            w.stop()
        results = await asyncio.gather(serving, *running, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    failures = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError | SystemExit)
    ]
    if failures:
        raise failures[0]


def _bound_port(server: uvicorn.Server) -> int | None:
    for s in getattr(server, "servers", []):
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    return None


# -- keys ---------------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """API keys of the HTTP service (each maps to a tenant)."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant this key speaks for.")
@click.option("--admin", is_flag=True, help="May read every tenant's runs, queues and metrics.")
@click.option("--label", default=None, help="A note to recognise the key by.")
@db_option
@run_async
async def keys_create(tenant: str, admin: bool, label: str | None, db: str | None) -> None:
    """Create a key and print it (once: only its hash is stored)."""
    tenant = tenant.strip()
    if not tenant or len(tenant) > 200:
        raise CliError("--tenant must be a non-empty name of at most 200 characters", 2)
    app = resolve_app(None, db)
    try:
        await app.open()
        key, token = await create_key(app.store, tenant, admin=admin, label=label)
    finally:
        await app.close()
    click.echo(token)
    kind = "admin key" if admin else "key"
    click.echo(
        f"created {kind} {key.id} for tenant {tenant}; store it now, it is not shown again",
        err=True,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@db_option
@run_async
async def keys_list(as_json: bool, db: str | None) -> None:
    """Every key (never the token): id, tenant, admin, label, created, revoked."""
    app = resolve_app(None, db)
    try:
        await app.open()
        found = await app.store.list_api_keys()
    finally:
        await app.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": k.id,
                        "tenant": k.tenant,
                        "admin": k.admin,
                        "label": k.label,
                        "created_at": k.created_at,
                        "revoked_at": k.revoked_at,
                    }
                    for k in found
                ],
                indent=2,
            )
        )
        return
    table = Table("id", "tenant", "admin", "label", "created", "revoked", box=None)
    for k in found:
        table.add_row(
            k.id,
            k.tenant,
            "yes" if k.admin else "",
            k.label or "",
            when(k.created_at),
            when(k.revoked_at) if k.revoked else "",
        )
    console.print(table)


@keys.command("revoke")
@click.argument("key_id")
@db_option
@run_async
async def keys_revoke(key_id: str, db: str | None) -> None:
    """Revoke key KEY_ID (the id from `keys list`, or the token itself)."""
    if key_id.startswith("crl_"):
        key_id = key_id[4:].split("_", 1)[0]
    app = resolve_app(None, db)
    try:
        await app.open()
        revoked = await app.store.revoke_api_key(key_id)
    finally:
        await app.close()
    if not revoked:
        raise CliError(f"no live key {key_id!r}", 1)
    click.echo(f"revoked {key_id} (API instances stop accepting it within their key cache TTL)")


__all__ = ["keys", "serve"]
