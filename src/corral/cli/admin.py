"""``corral tenants`` and ``corral plans``: plan tiers, per-tenant overrides, the global cap."""

from __future__ import annotations

import click

from corral.cli.common import (
    FiniteFloat,
    age,
    db_option,
    limit_text,
    resolve_app,
    run_async,
)
from corral.cli.output import print_table


@click.group()
def tenants() -> None:
    """Tenants: plan, cap, weight, queue quota."""


@tenants.command("set")
@click.argument("tenant")
@click.option("--plan", default=None)
@click.option("--cap", type=click.IntRange(min=1), default=None, help="In-flight cap override.")
@click.option("--weight", type=FiniteFloat(min=0, min_open=True), default=None)
@click.option(
    "--max-queued", type=click.IntRange(min=1), default=None, help="Queued-run quota override."
)
@db_option
@run_async
async def tenants_set(
    tenant: str,
    plan: str | None,
    cap: int | None,
    weight: float | None,
    max_queued: int | None,
    db: str | None,
) -> None:
    """Assign TENANT a plan and/or overrides."""
    app = resolve_app(None, db)
    try:
        await app.set_tenant(tenant, plan=plan, cap=cap, weight=weight, max_queued=max_queued)
    finally:
        await app.close()
    click.echo(f"tenant {tenant} updated")


@tenants.command("list")
@db_option
@run_async
async def tenants_list(db: str | None) -> None:
    """Every tenant with cap, in flight, queued and oldest queued age."""
    app = resolve_app(None, db, existing=True)
    try:
        stats = await app.stats()
    finally:
        await app.close()
    print_table(
        (
            "tenant",
            "plan",
            "cap",
            "weight",
            "in flight",
            "queued",
            "oldest",
            "succeeded",
            "failed",
            "cancelled",
        ),
        (
            (
                t.tenant,
                t.plan,
                limit_text(t.cap),
                f"{t.weight:g}",
                str(t.in_flight),
                str(t.queued),
                age(t.oldest_queued_age) if t.queued else "-",
                str(t.succeeded),
                str(t.failed),
                str(t.cancelled),
            )
            for t in stats.tenants
        ),
    )


@click.group()
def plans() -> None:
    """Plan tiers: in-flight cap, weight and queued quota of their tenants."""


@plans.command("set")
@click.argument("name")
@click.option("--cap", type=click.IntRange(min=1), default=None, help="In-flight cap (none: ∞).")
@click.option("--weight", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True)
@click.option("--max-queued", type=click.IntRange(min=1), default=None)
@db_option
@run_async
async def plans_set(
    name: str, cap: int | None, weight: float, max_queued: int | None, db: str | None
) -> None:
    """Create or change plan NAME (its tenants follow at once)."""
    app = resolve_app(None, db)
    try:
        await app.set_plan(name, cap=cap, weight=weight, max_queued=max_queued)
    finally:
        await app.close()
    click.echo(f"plan {name} set")


@plans.command("list")
@db_option
@run_async
async def plans_list(db: str | None) -> None:
    """Every plan with its cap, weight and queued-run quota."""
    app = resolve_app(None, db, existing=True)
    try:
        found = await app.plans()
    finally:
        await app.close()
    print_table(
        ("plan", "cap", "weight", "max queued"),
        ((p.name, limit_text(p.cap), f"{p.weight:g}", limit_text(p.max_queued)) for p in found),
    )


@plans.command("global-cap")
@click.argument("cap", type=click.IntRange(min=0))
@db_option
@run_async
async def plans_global_cap(cap: int, db: str | None) -> None:
    """Cap runs in flight across all tenants (0 removes the cap)."""
    app = resolve_app(None, db)
    try:
        await app.set_global_cap(cap or None)
    finally:
        await app.close()
    click.echo(f"global cap {cap if cap else 'removed'}")
