"""``corral demo``: the service, its dashboard, embedded workers and a simulated rate-limited
LLM provider, all in this process on the embedded default (SQLite in a temp dir); a pro, a
free and a noisy free tenant; live progress; a closing report. See docs/demo.md."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from corral.cli.common import CliError, FiniteFloat, run_async


@click.command()
@click.option(
    "--duration",
    type=FiniteFloat(min=1, max=3600),
    default=60.0,
    show_default=True,
    help="Seconds quiet tenants keep submitting; then in-flight runs are drained.",
)
@click.option(
    "--tenants",
    "quiet_tenants",
    type=click.IntRange(1, 8),
    default=2,
    show_default=True,
    help="Quiet tenants besides the noisy one (1-8; they alternate pro, free, pro, ...).",
)
@click.option(
    "--noisy-runs",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Runs the noisy free tenant submits in one burst.",
)
@click.option(
    "--drain",
    type=FiniteFloat(min=1, max=3600),
    default=20.0,
    show_default=True,
    help="Longest wait for in-flight runs after the duration.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=3,
    show_default=True,
    help="Embedded workers.",
)
@click.option(
    "--provider-concurrency",
    type=click.IntRange(1, 1000),
    default=6,
    show_default=True,
    help="Calls the simulated provider serves at once.",
)
@click.option(
    "--provider-rpm",
    type=click.IntRange(1, 1_000_000),
    default=600,
    show_default=True,
    help="Requests per minute the simulated provider accepts.",
)
@click.option("--db", default=None, metavar="URL", help="Database URL (default: a temp SQLite).")
@click.option(
    "--keep-serving", is_flag=True, help="Keep the API and dashboard up after the report."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as JSON here.",
)
@click.option("--seed", type=int, default=None, help="Seed the demo's random choices.")
@run_async
async def demo(
    duration: float,
    quiet_tenants: int,
    noisy_runs: int,
    drain: float,
    workers: int,
    provider_concurrency: int,
    provider_rpm: int,
    db: str | None,
    keep_serving: bool,
    json_path: Path | None,
    seed: int | None,
) -> None:
    """Run three kinds of tenants through a live corral service and report on fairness."""
    from corral.cli.output import console as shared_console
    from corral.demo.report import render_report
    from corral.demo.runner import Demo, DemoOptions

    if json_path is not None and not json_path.parent.is_dir():
        raise CliError(f"--json: no directory {json_path.parent} to write the report in", 2)
    console = shared_console()

    options = DemoOptions(
        duration=duration,
        quiet_tenants=quiet_tenants,
        noisy_runs=noisy_runs,
        workers=workers,
        provider_concurrency=provider_concurrency,
        provider_rpm=provider_rpm,
        drain=drain,
        db=db,
        keep_serving=keep_serving,
        seed=seed,
    )
    if not console.is_terminal:
        console.width = max(console.width, 150)  # CI logs: no wrapped tables or URLs

    async def show(report: dict[str, Any]) -> None:
        render_report(console, report)
        if json_path is not None:
            await asyncio.to_thread(json_path.write_text, json.dumps(report, indent=2) + "\n")
            console.print(f"report written to {json_path}")

    report = await Demo(options, console).run(on_report=show)
    if report["interrupted"]:
        raise CliError("interrupted before the demo ended", 130)
    if report["runs"]["lost"]:
        raise CliError(f"{report['runs']['lost']} runs did not end", 1)
