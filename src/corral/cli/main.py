"""``corral``: worker, submit, runs, status, tenants, plans, demo."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from corral.app import Corral
from corral.cli.admin import plans, tenants
from corral.cli.common import (
    CliError,
    FiniteFloat,
    age,
    age_target_option,
    app_db_option,
    app_option,
    db_option,
    duration,
    exit_past_stuck_agents,
    json_option,
    limit_text,
    load_app,
    on_fast_loop,
    parse_json,
    resolve_app,
    run_async,
    when,
    worker_options,
)
from corral.cli.demo import demo
from corral.cli.output import console, print_table, styled
from corral.cli.schedules import schedules
from corral.cli.serve import keys, serve
from corral.cli.workers import workers
from corral.errors import BackpressureError, RunNotFound, RunNotRetryable
from corral.models import JournalEntry, Run, RunStatus, WorkerState
from corral.values import MAX_SECONDS

if TYPE_CHECKING:
    from rich.text import Text

#: journal entries `runs journal` reads at a time
JOURNAL_PAGE = 1000


@click.group()
@click.version_option(package_name="corral")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """corral runs AI agents as durable, fair, bounded jobs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("app_path", metavar="MODULE:ATTR")
@worker_options
@db_option
@on_fast_loop
@run_async
async def worker(
    app_path: str,
    concurrency: int,
    lease_ttl: float | None,
    drain_timeout: float,
    poll_interval: float,
    express_slots: int,
    express_below: int,
    agent_timeout: float | None,
    retain: float | None,
    handoffs: bool,
    stop_grace: float,
    db: str | None,
) -> None:
    """Run a worker for the app at MODULE:ATTR until SIGTERM/SIGINT."""
    app = resolve_app(app_path, db, in_process=True)
    if not app.agents:
        raise CliError(f"{app_path} registers no agents", 2)
    await app.open()
    try:
        w = app.worker(
            concurrency=concurrency,
            lease_ttl=lease_ttl,
            drain_timeout=drain_timeout,
            poll_interval=poll_interval,
            express_slots=express_slots,
            express_below=express_below,
            agent_timeout=agent_timeout,
            retain=retain,
            handoffs=handoffs,
            stop_grace=stop_grace,
        )
        w.install_signal_handlers()
        click.echo(
            f"corral worker {w.worker_id}: {concurrency} slots"
            + (
                f" + {express_slots} express (tenants below {express_below} in flight)"
                if express_slots
                else ""
            )
            + (
                f", attempts stopped after {age(agent_timeout)} (agents without their own timeout)"
                if agent_timeout is not None
                else ""
            )
            + (f", deleting runs ended over {age(retain)} ago" if retain is not None else "")
            + ", "
            f"agents: {', '.join(sorted(app.agents))}"
            + (f", schedules: {', '.join(sorted(app.schedules))}" if app.schedules else ""),
            err=True,
        )
        await w.run()
    finally:
        await app.close()
    exit_past_stuck_agents([w])


@cli.command()
@click.argument("agent")
@click.argument("input_json", default="null", metavar="[INPUT_JSON]")
@click.option("--tenant", default="default", show_default=True)
@click.option(
    "--priority", type=click.IntRange(-1_000_000, 1_000_000), default=0, show_default=True
)
@click.option("--idempotency-key", default=None)
@click.option(
    "--delay", type=FiniteFloat(min=0), default=None, help="Seconds before the run may start."
)
@click.option("--max-attempts", type=click.IntRange(min=1, max=1000), default=None)
@click.option("--budget", type=FiniteFloat(min=0), default=None)
@click.option(
    "--timeout",
    metavar="DURATION",
    default=None,
    callback=duration,
    help="Stop and fail (retried) an attempt running longer than this, in place of the "
    "agent's timeout (e.g. 90s, 10m).",
)
@click.option(
    "--start-within",
    metavar="DURATION",
    default=None,
    callback=duration,
    help="End the run failed (run_expired), unrun, if it has not started this long after it "
    "is due (e.g. 5m).",
)
@click.option(
    "--wait",
    "wait_s",
    type=FiniteFloat(min=0),
    default=None,
    help="Wait up to this many seconds for the run to end and print it.",
)
@app_option
@app_db_option
@run_async
async def submit(
    agent: str,
    input_json: str,
    tenant: str,
    priority: int,
    idempotency_key: str | None,
    delay: float | None,
    max_attempts: int | None,
    budget: float | None,
    timeout: float | None,
    start_within: float | None,
    wait_s: float | None,
    app_path: str | None,
    db: str | None,
) -> None:
    """Submit a run of AGENT with INPUT_JSON; prints the run id."""
    payload = parse_json(input_json, "INPUT_JSON")
    app = resolve_app(app_path, db)
    try:
        run_id = await app.submit(
            agent,
            payload,
            tenant=tenant,
            priority=priority,
            idempotency_key=idempotency_key,
            delay=delay,
            max_attempts=max_attempts,
            budget=budget,
            timeout=timeout,
            start_within=start_within,
        )
        click.echo(run_id)
        if not app.agents:  # a bare client: the agent was not checked against an app
            await _warn_if_no_worker_executes(app, agent)
        if wait_s is not None:
            try:
                run = await app.wait(run_id, timeout=wait_s)
            except TimeoutError:
                raise CliError(f"run {run_id} did not end within {wait_s}s", 4) from None
            _print_run(run, as_json=True)
    finally:
        await app.close()


async def _warn_if_no_worker_executes(app: Corral, agent: str) -> None:
    """Say so on stderr when workers are running and none executes ``agent`` (a typo, or a
    worker not yet deployed): its run is kept, and each worker without the agent fails an
    attempt of it, offering it again 30 s later, until it is dead-lettered."""
    now = time.time()
    live = [w for w in await app.workers() if w.state(now) is not WorkerState.LOST]
    # a worker reporting no agents predates the report of them: it may well execute this one
    if not live or not all(w.agents for w in live) or any(agent in w.agents for w in live):
        return
    known = sorted({name for w in live for name in w.agents})
    click.echo(
        f"warning: none of the {len(live)} running worker(s) executes agent {agent!r} "
        f"(they execute: {', '.join(known)}); the run is kept, and workers without the agent "
        "fail its attempts, 30 s apart, until one with it takes the run or it is dead-lettered",
        err=True,
    )


@cli.group()
def runs() -> None:
    """Inspect, cancel and retry runs."""


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@db_option
@run_async
async def runs_show(run_id: str, as_json: bool, db: str | None) -> None:
    """Show one run."""
    app = resolve_app(None, db, existing=True)
    try:
        _print_run(await app.get(run_id), as_json)
    finally:
        await app.close()


@runs.command("list")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), default=None)
@click.option("--tenant", default=None)
@click.option("--agent", default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
@db_option
@run_async
async def runs_list(
    status: str | None,
    tenant: str | None,
    agent: str | None,
    limit: int,
    as_json: bool,
    db: str | None,
) -> None:
    """List runs, newest first."""
    app = resolve_app(None, db, existing=True)
    try:
        found = await app.list_runs(status=status, tenant=tenant, agent=agent, limit=limit)
    finally:
        await app.close()
    if as_json:
        click.echo(json.dumps([_run_dict(r) for r in found], indent=2))
        return
    print_table(
        ("id", "tenant", "agent", "status", "attempts", "created"),
        (
            (r.id, r.tenant, r.agent, r.status.value, str(r.attempts), when(r.created_at))
            for r in found
        ),
    )


@runs.command("cancel")
@click.argument("run_id")
@db_option
@run_async
async def runs_cancel(run_id: str, db: str | None) -> None:
    """Cancel a run (and its descendants)."""
    app = resolve_app(None, db, existing=True)
    try:
        run = await app.cancel(run_id)
    finally:
        await app.close()
    note = " (cancellation requested; its worker stops it)" if run.status == "running" else ""
    click.echo(f"{run.id} {run.status.value}{note}")


@runs.command("retry")
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option(
    "--all-failed",
    is_flag=True,
    help="Every failed root run instead of the ids given (narrow with --tenant, --agent).",
)
@click.option("--tenant", default=None, help="With --all-failed: this tenant's runs only.")
@click.option("--agent", default=None, help="With --all-failed: this agent's runs only.")
@click.option(
    "--attempts",
    type=click.IntRange(1, 1_000_000),
    default=None,
    help="Attempts each gets from now (default: as many as it was submitted with).",
)
@db_option
@run_async
async def runs_retry(
    run_ids: tuple[str, ...],
    all_failed: bool,
    tenant: str | None,
    agent: str | None,
    attempts: int | None,
    db: str | None,
) -> None:
    """Queue dead-lettered (failed) runs again, the ids given or --all-failed (after a fix is
    deployed). Each replays its journal, so steps that succeeded are not redone."""
    if all_failed == bool(run_ids):
        raise CliError("give run ids or --all-failed (not both)", 2)
    if not all_failed and (tenant is not None or agent is not None):
        raise CliError("--tenant and --agent narrow --all-failed", 2)
    app = resolve_app(None, db, existing=True)
    refused = 0
    try:
        if run_ids:
            for run_id in run_ids:
                try:
                    run = await app.retry(run_id, attempts=attempts)
                except (RunNotRetryable, RunNotFound, BackpressureError) as exc:
                    if len(run_ids) == 1:
                        raise
                    click.echo(f"{run_id} not retried: {exc.code}: {exc}", err=True)
                    refused += 1
                    continue
                click.echo(
                    f"{run.id} {run.status.value} (up to {run.max_attempts} attempts in all)"
                )
        else:
            retried, refused = await _retry_all_failed(app, tenant, agent, attempts)
            click.echo(f"retried {retried} failed runs")
    finally:
        await app.close()
    if refused:
        raise CliError(f"{refused} runs not retried (see above)", 1)


async def _retry_all_failed(
    app: Corral, tenant: str | None, agent: str | None, attempts: int | None
) -> tuple[int, int]:
    """Retry every failed root run, newest first. Runs over their tenant's quota are reported
    and skipped. Returns (retried, refused)."""
    retried = refused = 0
    async for page in app.iter_runs(status=RunStatus.FAILED, tenant=tenant, agent=agent):
        for run in page:
            if run.parent_id is not None:
                continue  # its root is the run to retry
            try:
                await app.retry(run.id, attempts=attempts)
                retried += 1
            except BackpressureError as exc:
                click.echo(f"{run.id} not retried: {exc.code}: {exc}", err=True)
                refused += 1
            except RunNotRetryable:
                pass  # retried or purged meanwhile by someone else
    return retried, refused


@runs.command("purge")
@click.option(
    "--older-than",
    metavar="DURATION",
    callback=duration,
    required=True,
    help="Delete runs that ended longer ago than this (seconds, or 90s, 30m, 12h, 7d).",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Top-level runs deleted per transaction.",
)
@db_option
@run_async
async def runs_purge(older_than: float, batch: int, db: str | None) -> None:
    """Delete ended runs and their journals; a run tree goes once all of it has ended."""
    app = resolve_app(None, db, existing=True)
    total = 0
    started = time.monotonic()
    try:
        # the cutoff stays where it was when the command started: each step's own "now"
        # found the runs that had ended since the step before, so while runs kept ending
        # no step came back empty and the command never finished
        while deleted := await app.purge_finished(
            min(older_than + (time.monotonic() - started), MAX_SECONDS), limit=batch
        ):
            total += deleted
    finally:
        await app.close()
    click.echo(f"deleted {total} runs that ended more than {age(older_than)} ago")


@runs.command("journal")
@click.argument("run_id")
@click.option("--after", type=click.IntRange(min=0), default=0, help="Only entries after this seq.")
@json_option
@db_option
@run_async
async def runs_journal(run_id: str, after: int, as_json: bool, db: str | None) -> None:
    """Print a run's journal in order."""
    app = resolve_app(None, db, existing=True)
    try:
        # page by page: one read returns at most JOURNAL_PAGE entries, and a run's journal
        # has one per step, however many
        while entries := await app.journal(run_id, after=after, limit=JOURNAL_PAGE):
            for e in entries:
                click.echo(_journal_line(e, as_json))
            after = entries[-1].seq
    finally:
        await app.close()


def _journal_line(e: JournalEntry, as_json: bool) -> str:
    if as_json:
        return json.dumps(asdict(e))
    return f"{e.seq:>5}  {when(e.created_at)}  {e.kind:<10} {e.name or '':<20} {json.dumps(e.data)}"


@cli.command()
@json_option
@age_target_option
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Run slots of each worker being scaled (their --concurrency), for the suggested count.",
)
@db_option
@run_async
async def status(as_json: bool, age_target: float, concurrency: int, db: str | None) -> None:
    """Queue depth, oldest queued age and in-flight runs per tenant, and the workers the load
    needs against the age target (what to autoscale on: docs/service.md)."""
    app = resolve_app(None, db, existing=True)
    try:
        stats = await app.stats()
    finally:
        await app.close()
    suggested = stats.suggested_workers(age_target=age_target, slots_per_worker=concurrency)
    if as_json:
        click.echo(
            json.dumps(
                asdict(stats)
                | {
                    "suggested_workers": suggested,
                    "age_target": age_target,
                    "slots_per_worker": concurrency,
                },
                indent=2,
            )
        )
        return
    rows: list[tuple[str | Text, ...]] = [
        (
            t.tenant,
            t.plan,
            str(t.queued),
            f"{t.in_flight} / {limit_text(t.cap)}",
            age(t.oldest_queued_age) if t.queued else "-",
        )
        for t in stats.tenants
    ]
    rows.append(
        (
            styled("total", "bold"),
            "",
            str(stats.queued),
            f"{stats.in_flight} / {limit_text(stats.global_cap)}",
            age(stats.oldest_queued_age) if stats.queued else "-",
        )
    )
    print_table(("tenant", "plan", "queued", "in flight / cap", "oldest queued"), rows)
    console().print(
        f"waiting: {stats.waiting}   by status: "
        + ", ".join(f"{k}={v}" for k, v in sorted(stats.by_status.items()))
    )
    console().print(
        f"suggested workers: {suggested} (age target {age_target:g} s, "
        f"{concurrency} slots per worker)"
    )


def _run_dict(run: Run) -> dict[str, Any]:
    d = asdict(run)
    d["status"] = run.status.value
    d["budget_remaining"] = run.budget_remaining
    return d


def _print_run(run: Run, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(_run_dict(run), indent=2))
        return
    for key, value in (
        ("id", run.id),
        ("tenant", run.tenant),
        ("agent", run.agent),
        ("status", run.status.value),
        ("attempts", f"{run.attempts} of {run.max_attempts}"),
        ("timeout", "-" if run.timeout is None else f"{run.timeout:g} s per attempt"),
        ("start by", when(run.start_by)),
        ("created", when(run.created_at)),
        ("started", when(run.started_at)),
        ("finished", when(run.finished_at)),
        ("input", json.dumps(run.input)),
        ("result", json.dumps(run.result)),
        ("error", json.dumps(run.error)),
    ):
        click.echo(f"{key:>9}: {value}")


cli.add_command(tenants)
cli.add_command(plans)
cli.add_command(demo)
cli.add_command(serve)
cli.add_command(keys)
cli.add_command(schedules)
cli.add_command(workers)


def main() -> None:
    cli(prog_name="corral")


__all__ = ["cli", "load_app", "main"]


if __name__ == "__main__":
    main()
