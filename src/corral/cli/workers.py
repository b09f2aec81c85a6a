"""``corral workers``: the workers on a database, as each last reported itself."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import click

from corral.cli.common import age, db_option, json_option, resolve_app, run_async
from corral.cli.output import print_table, styled
from corral.models import WorkerState

STATE_STYLE = {
    WorkerState.RUNNING: "",
    WorkerState.DRAINING: "yellow",
    WorkerState.LOST: "red",
}


@click.command()
@json_option
@db_option
@run_async
async def workers(as_json: bool, db: str | None) -> None:
    """The workers on the database: state (running, draining, or lost: not heard from for a
    lease TTL, shown for an hour), slots busy, agents stuck past their stop, runs completed,
    and the agents each executes."""
    app = resolve_app(None, db, existing=True)
    try:
        found = await app.workers()
    finally:
        await app.close()
    now = time.time()
    if as_json:
        click.echo(json.dumps([asdict(w) | {"state": w.state(now).value} for w in found], indent=2))
        return
    if not found:
        click.echo("no workers")
        return
    print_table(
        ("worker", "state", "busy / slots", "stuck", "completed", "up", "last report", "agents"),
        (
            (
                w.worker_id,
                styled(w.state(now).value, STATE_STYLE[w.state(now)]),
                f"{w.busy} / {w.concurrency}"
                + (f" + {w.express_slots} express" if w.express_slots else ""),
                styled(str(w.stuck), "red") if w.stuck else "0",
                str(w.completed),
                age(max(0.0, now - w.started_at)),
                age(max(0.0, now - w.seen_at)) + " ago",
                _names(w.agents),
            )
            for w in found
        ),
    )


def _names(agents: tuple[str, ...], shown: int = 5) -> str:
    more = len(agents) - shown
    return ", ".join(agents[:shown]) + (f" (+{more} more)" if more > 0 else "")
