"""``corral schedules``: the recurring schedules (declared in an app's code, or created at run
time and stored), their last and next ticks; create and delete stored ones."""

from __future__ import annotations

import json

import click

from corral.cli.common import (
    app_db_option,
    app_option,
    db_option,
    duration,
    json_option,
    parse_json,
    resolve_app,
    run_async,
    when,
)
from corral.cli.output import print_table
from corral.dispatch.schedule import DEFAULT_CATCH_UP


@click.group()
def schedules() -> None:
    """Recurring schedules: list them; create, pause, resume and delete those stored in the
    database."""


@schedules.command("list")
@click.option("--tenant", default=None, help="Only this tenant's schedules.")
@json_option
@app_option
@app_db_option
@run_async
async def list_schedules(
    tenant: str | None, as_json: bool, app_path: str | None, db: str | None
) -> None:
    """List the schedules created at run time and, with --app, those of the app's code: when
    they tick, what they run, the last tick that got a run and the next tick."""
    app = resolve_app(app_path, db, existing=app_path is None)
    try:
        states = await app.schedule_states(tenant)
    finally:
        await app.close()
    if as_json:
        rows = [
            {
                "name": st.schedule.name,
                "stored": st.schedule.definition is not None,
                "paused_at": st.schedule.paused_at,
                "when": st.schedule.when,
                "agent": st.schedule.run.agent,
                "tenant": st.schedule.run.tenant,
                "last_run_tick": st.last_run_tick,
                "next_tick": st.next_tick,
            }
            for st in states
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not states:
        click.echo("no schedules" + ("" if app_path else " stored (give --app for the app's)"))
        return
    print_table(
        ("name", "when", "agent", "tenant", "last run", "next"),
        (
            (
                st.schedule.name,
                st.schedule.when,
                st.schedule.run.agent,
                st.schedule.run.tenant,
                when(st.last_run_tick),
                "paused" if st.schedule.paused_at is not None else when(st.next_tick),
            )
            for st in states
        ),
    )


@schedules.command("create")
@click.argument("name")
@click.argument("agent")
@click.argument("input_json", default="null", metavar="[INPUT_JSON]")
@click.option("--tenant", default="default", show_default=True)
@click.option("--cron", default=None, help='Five cron fields, e.g. "0 9 * * 1-5".')
@click.option(
    "--every", metavar="DURATION", default=None, callback=duration, help="A period (90s, 1h)."
)
@click.option(
    "--tz",
    default="UTC",
    show_default=True,
    help="IANA time zone of the cron fields (Europe/Berlin; not localtime).",
)
@click.option(
    "--priority", type=click.IntRange(-1_000_000, 1_000_000), default=0, show_default=True
)
@click.option("--max-attempts", type=click.IntRange(min=1, max=1000), default=None)
@click.option("--timeout", metavar="DURATION", default=None, callback=duration)
@click.option("--start-within", metavar="DURATION", default=None, callback=duration)
@click.option(
    "--catch-up",
    metavar="DURATION",
    default=None,
    callback=duration,
    help="Make up a tick missed while no worker ran if one comes back within this (default 1h).",
)
@app_option
@app_db_option
@run_async
async def create(
    name: str,
    agent: str,
    input_json: str,
    tenant: str,
    cron: str | None,
    every: float | None,
    tz: str,
    priority: int,
    max_attempts: int | None,
    timeout: float | None,
    start_within: float | None,
    catch_up: float | None,
    app_path: str | None,
    db: str | None,
) -> None:
    """Store a schedule NAME of TENANT: a run of AGENT with INPUT_JSON at every tick of
    --cron or --every, submitted by the workers of the deployment from the next tick on.
    Prints its full name (tenant/name) and next tick."""
    payload = parse_json(input_json, "INPUT_JSON")
    app = resolve_app(app_path, db)
    try:
        schedule = await app.create_schedule(
            name,
            agent,
            payload,
            cron=cron,
            every=every,
            tz=tz,
            tenant=tenant,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            start_within=start_within,
            catch_up=DEFAULT_CATCH_UP if catch_up is None else catch_up,
        )
        next_tick = schedule.next_tick(app.store.clock())
    finally:
        await app.close()
    click.echo(f"{schedule.name}\t{schedule.when}\tnext {when(next_tick)}")


def _change_command(verb: str, done: str, help_text: str) -> None:
    """``corral schedules VERB NAME --tenant T``: one change to a stored schedule, through
    ``Corral.<verb>_schedule``, printing ``done tenant/name``."""

    @schedules.command(verb, help=help_text)
    @click.argument("name")
    @click.option("--tenant", default="default", show_default=True)
    @db_option
    @run_async
    async def change(name: str, tenant: str, db: str | None) -> None:
        app = resolve_app(None, db, existing=True)
        try:
            await getattr(app, f"{verb}_schedule")(name, tenant=tenant)
        finally:
            await app.close()
        click.echo(f"{done} {tenant}/{name}")


_change_command(
    "delete", "deleted", "Delete TENANT's stored schedule NAME: no later tick gets a run."
)
_change_command(
    "pause", "paused", "Pause TENANT's stored schedule NAME: its ticks get no run until resumed."
)
_change_command(
    "resume",
    "resumed",
    "Resume TENANT's paused schedule NAME from its next tick (no make-up for the ticks it "
    "was paused through).",
)
