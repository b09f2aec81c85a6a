"""The demo's closing report: figures computed from the store's runs, and their rendering."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from corral.models import Run, RunStatus


@dataclass(frozen=True)
class TenantRole:
    name: str
    plan: str
    noisy: bool


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def queue_wait(run: Run, now: float) -> float:
    """Seconds from submission to first start. A run that never started (cancelled at the end,
    or still queued) counts the time it sat in the queue: a lower bound of its wait."""
    end = run.started_at or run.finished_at or now
    return max(0.0, end - run.created_at)


@dataclass
class TenantFigures:
    role: TenantRole
    submitted: int = 0
    children: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    waits: list[float] = field(default_factory=list)
    budget: float = 0.0
    spent: float = 0.0
    provider_calls: int = 0

    def as_dict(self) -> dict[str, Any]:
        lost = sum(n for s, n in self.by_status.items() if not RunStatus(s).terminal)
        return {
            "plan": self.role.plan,
            "noisy": self.role.noisy,
            "submitted": self.submitted,
            "children": self.children,
            "succeeded": self.by_status.get("succeeded", 0),
            "failed": self.by_status.get("failed", 0),
            "cancelled": self.by_status.get("cancelled", 0),
            "lost": lost,
            "wait_p50": percentile(self.waits, 0.5),
            "wait_p95": percentile(self.waits, 0.95),
            "wait_max": max(self.waits) if self.waits else None,
            "budget": self.budget,
            "spent": self.spent,
            "provider_calls": self.provider_calls,
        }


def build_report(
    roles: Sequence[TenantRole],
    runs: Sequence[Run],
    *,
    now: float,
    provider: dict[str, Any],
    calls_by_tenant: dict[str, int],
    client_throttled: int,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The machine-readable report (what ``--json`` writes). Waits are over the runs the
    demo submitted (root runs); statuses and losses are over every run, children included."""
    figures = {r.name: TenantFigures(r) for r in roles}
    for run in runs:
        fig = figures.get(run.tenant)
        if fig is None:
            continue
        fig.by_status[run.status.value] = fig.by_status.get(run.status.value, 0) + 1
        if run.parent_id is None:
            fig.submitted += 1
            fig.waits.append(queue_wait(run, now))
            fig.budget += run.budget or 0.0
            fig.spent += run.spent
        else:
            fig.children += 1
    for name, calls in calls_by_tenant.items():
        if name in figures:
            figures[name].provider_calls = calls
    tenants = {name: f.as_dict() for name, f in figures.items()}
    quiet = [t for t in tenants.values() if not t["noisy"]]
    noisy = [t for t in tenants.values() if t["noisy"]]
    quiet_p95 = max((t["wait_p95"] for t in quiet if t["wait_p95"] is not None), default=None)
    quiet_p50 = max((t["wait_p50"] for t in quiet if t["wait_p50"] is not None), default=None)
    noisy_p95 = max((t["wait_p95"] for t in noisy if t["wait_p95"] is not None), default=None)
    ratio = (
        noisy_p95 / max(quiet_p95, 1e-3)
        if quiet_p95 is not None and noisy_p95 is not None
        else None
    )
    statuses: dict[str, int] = {}
    for t in tenants.values():
        for key in ("succeeded", "failed", "cancelled", "lost"):
            statuses[key] = statuses.get(key, 0) + int(t[key])
    return {
        **meta,
        "tenants": tenants,
        "fairness": {
            "quiet_wait_p50_max": quiet_p50,
            "quiet_wait_p95_max": quiet_p95,
            "noisy_wait_p95": noisy_p95,
            "noisy_over_quiet_p95": ratio,
        },
        "provider": {
            **provider,
            "throttled_429": int(provider.get("throttled", 0)),
            "client_retries_after_429": client_throttled,
        },
        "budget": {
            "budgeted": sum(t["budget"] for t in tenants.values()),
            "spent": sum(t["spent"] for t in tenants.values()),
        },
        "runs": {
            "submitted": sum(t["submitted"] for t in tenants.values()),
            "children": sum(t["children"] for t in tenants.values()),
            **statuses,
        },
    }


def _secs(value: float | None) -> str:
    # quiet tenants wait milliseconds: in seconds to two places they read "0.00s", and the
    # fairness ratio beside them looked like a division by nothing
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 0.995 else f"{value:.2f}s"


def render_report(console: Console, report: dict[str, Any]) -> None:
    table = Table(
        title="corral demo: report",
        title_justify="left",
        caption="* the noisy tenant. wait: from submit to first start",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    headers = (
        "tenant", "plan", "runs+sub", "ok", "fail", "cxl", "lost",
        "p50 wait", "p95 wait", "tokens",
    )  # fmt: skip
    for column in headers:
        table.add_column(
            column, justify="left" if column in ("tenant", "plan") else "right", no_wrap=True
        )
    for name, t in report["tenants"].items():
        table.add_row(
            f"{name}*" if t["noisy"] else name,
            t["plan"],
            f"{t['submitted']}+{t['children']}",
            str(t["succeeded"]),
            str(t["failed"]),
            str(t["cancelled"]),
            str(t["lost"]),
            _secs(t["wait_p50"]),
            _secs(t["wait_p95"]),
            f"{t['spent']:,.0f}",
        )
    console.print(table)
    fair = report["fairness"]
    ratio = fair["noisy_over_quiet_p95"]
    console.print(
        f"fairness: quiet tenants' p95 queue wait {_secs(fair['quiet_wait_p95_max'])} "
        f"vs the noisy tenant's {_secs(fair['noisy_wait_p95'])}"
        + (f" ({ratio:,.0f}x)" if ratio is not None else "")
    )
    p = report["provider"]
    console.print(
        f"provider: {p['accepted']} calls accepted, {p['throttled_429']} answered 429, "
        f"peak {p['peak_in_flight']} in flight (limit {p['concurrency']}, {p['rpm']} rpm)"
    )
    b, r = report["budget"], report["runs"]
    console.print(
        f"budget: {b['spent']:,.0f} of {b['budgeted']:,.0f} tokens spent   "
        f"runs: {r['submitted']} submitted + {r['children']} sub-agents; "
        f"{r['succeeded']} succeeded, {r['failed']} failed, {r['cancelled']} cancelled, "
        f"[bold]{r['lost']} lost[/bold]"
    )
    console.print(
        f"elapsed {report['elapsed']:.1f}s on {report['db']}"
        + ("   [bold]interrupted[/bold]" if report["interrupted"] else "")
    )
