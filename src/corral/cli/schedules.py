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
        states = await app.schedule_states()
    finally:
        await app.close()
    if as_json:
        rows = [
            {
                "name": st.schedule.name,
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
        click.echo("this app has no schedules")
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
                when(st.next_tick),
            )
            for st in states
        ),
    )
