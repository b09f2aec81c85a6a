"""``corral schedules APP``: an app's recurring schedules, their last and next ticks."""

from __future__ import annotations

import json

import click

from corral.cli.common import db_option, resolve_app, run_async, when
from corral.cli.output import print_table


@click.command()
@click.argument("app_path", metavar="MODULE:ATTR")
@click.option("--json", "as_json", is_flag=True)
@db_option
@run_async
async def schedules(app_path: str, as_json: bool, db: str | None) -> None:
    """List the schedules of the app at MODULE:ATTR: when they tick, what they run, the last
    tick that got a run and the next tick."""
    app = resolve_app(app_path, db)
    try:
        await app.open()
        ticks = await app.store.schedule_ticks()
    finally:
        await app.close()
    now = app.store.clock()
    # the latest tick that got a run (a tick only seen, or skipped, got none)
    listed = [(s, ticks.get(s.name, (None, None))[1]) for s in app.schedules.values()]
    if as_json:
        rows = [
            {
                "name": s.name,
                "when": s.when,
                "agent": s.run.agent,
                "tenant": s.run.tenant,
                "last_run_tick": last,
                "next_tick": s.next_tick(now),
            }
            for s, last in listed
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not listed:
        click.echo("this app has no schedules")
        return
    print_table(
        ("name", "when", "agent", "tenant", "last run", "next"),
        (
            (s.name, s.when, s.run.agent, s.run.tenant, when(last), when(s.next_tick(now)))
            for s, last in listed
        ),
    )
