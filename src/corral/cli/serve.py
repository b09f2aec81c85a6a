"""``corral serve`` (the HTTP API and embedded workers in one process) and ``corral keys``
(API keys: create, list, revoke). This is the service's edge: the only place its settings
are read from options and environment variables."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import click

from corral.cli.common import (
    CliError,
    age,
    age_target_option,
    app_db_option,
    app_option,
    db_option,
    exit_past_stuck_agents,
    json_option,
    on_fast_loop,
    resolve_app,
    run_async,
    when,
    worker_options,
)
from corral.cli.output import print_table
from corral.values import check_name
from corral.worker import Worker
from corral.worker.retention import RETENTION_INTERVAL, retention_loop


@click.command()
@app_option
@app_db_option
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
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=1_048_576,
    show_default=True,
    envvar="CORRAL_MAX_BODY_BYTES",
    help="Larger request bodies get 413 ($CORRAL_MAX_BODY_BYTES).",
)
@age_target_option
@click.option(
    "--public-metrics",
    is_flag=True,
    envvar="CORRAL_PUBLIC_METRICS",
    help="Serve /metrics without a key (default: admin key required; $CORRAL_PUBLIC_METRICS).",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@worker_options
def serve(**options: Any) -> None:
    """Serve the HTTP API (and run embedded workers) until SIGTERM/SIGINT."""
    _serve(**options)


@on_fast_loop
@run_async
async def _serve(
    app_path: str | None,
    db: str | None,
    host: str,
    port: int,
    workers: int | None,
    concurrency: int,
    lease_ttl: float | None,
    poll_interval: float,
    drain_timeout: float,
    express_slots: int,
    express_below: int,
    agent_timeout: float | None,
    retain: float | None,
    handoffs: bool,
    stop_grace: float,
    max_body_bytes: int,
    age_target: float,
    public_metrics: bool,
    access_log: bool,
) -> None:
    if not host.strip():
        # uvicorn takes an empty host as every interface: never what an empty
        # $CORRAL_HOST meant
        raise CliError("--host must name an interface (127.0.0.1, 0.0.0.0 for all)", 2)
    app = resolve_app(app_path, db, in_process=True)
    if workers is None:
        workers = 1 if app.agents else 0
    if workers > 0 and not app.agents:
        raise CliError("--workers needs --app MODULE:ATTR with agents (or --workers 0)", 2)
    # the web stack is imported here, so other commands start without it
    from corral.api import ApiSettings, run_service

    settings = ApiSettings(
        max_body_bytes=max_body_bytes,
        age_target=age_target,
        slots_per_worker=concurrency,
        public_metrics=public_metrics,
    )
    await app.open()
    embedded: list[Worker] = []
    try:
        embedded = [
            app.worker(
                concurrency=concurrency,
                lease_ttl=lease_ttl,
                poll_interval=poll_interval,
                drain_timeout=drain_timeout,
                express_slots=express_slots,
                express_below=express_below,
                agent_timeout=agent_timeout,
                retain=retain if i == 0 else None,  # one retention pass per process is enough
                handoffs=handoffs,
                stop_grace=stop_grace,
            )
            for i in range(workers)
        ]
        # with no embedded worker, the service keeps retention itself
        retention = (
            asyncio.create_task(retention_loop(app.store, retain, RETENTION_INTERVAL))
            if retain is not None and not embedded
            else None
        )

        def listening(url: str) -> None:
            kept = f", deleting runs ended over {age(retain)} ago" if retain is not None else ""
            click.echo(
                f"corral serve: listening on {url} with {workers} worker(s) on {app.url}{kept}",
                err=True,
            )

        try:
            await run_service(
                app,
                settings,
                embedded,
                host=host,
                port=port,
                access_log=access_log,
                on_listening=listening,
            )
        except RuntimeError as exc:
            raise CliError(str(exc), 1) from exc
        finally:
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
    finally:
        await app.close()
    exit_past_stuck_agents(embedded)


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
    from corral.api.tokens import create_key

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
@json_option
@db_option
@run_async
async def keys_list(as_json: bool, db: str | None) -> None:
    """Every key (never the token): id, tenant, admin, label, created, revoked."""
    app = resolve_app(None, db, existing=True)
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
    print_table(
        ("id", "tenant", "admin", "label", "created", "revoked"),
        (
            (
                k.id,
                k.tenant,
                "yes" if k.admin else "",
                k.label or "",
                when(k.created_at),
                when(k.revoked_at) if k.revoked else "",
            )
            for k in found
        ),
    )


@keys.command("revoke")
@click.argument("key_id")
@db_option
@run_async
async def keys_revoke(key_id: str, db: str | None) -> None:
    """Revoke key KEY_ID (the id from `keys list`, or the token itself)."""
    from corral.api.tokens import key_id_of

    key_id = key_id_of(key_id) or check_name("key id", key_id)
    app = resolve_app(None, db, existing=True)
    try:
        await app.open()
        revoked = await app.store.revoke_api_key(key_id)
    finally:
        await app.close()
    if not revoked:
        raise CliError(f"no live key {key_id!r}", 1)
    click.echo(f"revoked {key_id} (API instances stop accepting it within their key cache TTL)")


__all__ = ["keys", "serve"]
