"""``corral demo``: a small end-to-end run on the embedded default. Three tenants submit
work, an in-process worker executes it, and the results are summarised."""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from corral.app import Corral
from corral.cli.common import run_async
from corral.models import RunStatus
from corral.runs import RunContext

console = Console()


def build_app(url: str) -> Corral:
    app = Corral(url, lease_ttl=10)

    @app.agent("summarise")
    async def summarise(ctx: RunContext, input: dict[str, object]) -> dict[str, object]:
        # stands in for an LLM call: a latency drawn from a skewed distribution
        await asyncio.sleep(min(0.5, random.lognormvariate(-3.2, 0.6)))
        text = str(input.get("text", ""))
        await ctx.emit("progress", {"words": len(text.split())})
        return {"summary": text[:24], "words": len(text.split())}

    return app


@click.command()
@click.option("--runs", "n_runs", type=click.IntRange(1, 100_000), default=150, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=16, show_default=True)
@click.option("--db", default=None, help="Database URL (default: a fresh SQLite file).")
@run_async
async def demo(n_runs: int, concurrency: int, db: str | None) -> None:
    """Submit runs for three tenants, execute them with one worker, print a report."""
    url = db or f"sqlite:///{Path(tempfile.mkdtemp(prefix='corral-demo-')) / 'corral.db'}"
    app = build_app(url)
    console.print(f"[bold]corral demo[/bold] on {url}")
    async with app:
        await app.set_tenant("acme", plan="pro")
        await app.set_tenant("globex", plan="free")
        await app.set_tenant("initech", plan="free")
        mix = {"acme": 0.2, "globex": 0.1, "initech": 0.7}  # initech is the noisy one
        submitted_at: dict[str, float] = {}
        specs = []
        for i in range(n_runs):
            tenant = random.choices(list(mix), weights=list(mix.values()))[0]
            specs.append(
                {
                    "agent": "summarise",
                    "tenant": tenant,
                    "input": {"text": f"document {i} " + "lorem ipsum " * (i % 7)},
                }
            )
        started = time.time()
        ids = await app.submit_many(specs)
        for run_id in ids:
            submitted_at[run_id] = started
        console.print(f"submitted {len(ids)} runs in {1000 * (time.time() - started):.0f} ms")

        worker = app.worker(concurrency=concurrency, poll_interval=0.05)
        task = asyncio.create_task(worker.run(until_idle=True))
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            console=console,
        ) as progress:
            bar = progress.add_task("running", total=len(ids))
            while not task.done():
                stats = await app.stats()
                progress.update(
                    bar,
                    completed=stats.by_status.get("succeeded", 0)
                    + stats.by_status.get("failed", 0),
                )
                await asyncio.sleep(0.1)
            progress.update(bar, completed=len(ids))
        await task

        runs = [await app.get(i) for i in ids]
    table = Table("tenant", "plan cap", "runs", "succeeded", "p50 wait", "max wait")
    caps = {"acme": "20", "globex": "2", "initech": "2"}
    for tenant in mix:
        mine = [r for r in runs if r.tenant == tenant]
        waits = [(r.started_at or 0) - r.created_at for r in mine if r.started_at]
        ok = sum(r.status == RunStatus.SUCCEEDED for r in mine)
        table.add_row(
            tenant,
            caps[tenant],
            str(len(mine)),
            str(ok),
            f"{statistics.median(waits):.2f}s" if waits else "-",
            f"{max(waits):.2f}s" if waits else "-",
        )
    console.print(table)
    lost = sum(not r.done for r in runs)
    console.print(f"runs lost: {lost}   elapsed: {time.time() - started:.1f}s")
    if lost:
        raise click.ClickException(f"{lost} runs did not finish")
