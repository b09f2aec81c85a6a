"""Render bench/results/contention.json as the Markdown results section of the README.

    python bench/contention/report.py [path/to/contention.json]

Every figure comes from the JSON written by run.py; the target checks are computed here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def cell(rows: list[dict[str, Any]], system: str, agents: int, cap: int) -> dict[str, Any] | None:
    for r in rows:
        if (r["system"], r["agents"], r["capacity"]) == (system, agents, cap):
            return r
    return None


def render(data: dict[str, Any]) -> str:
    meta, rows = data["meta"], data["contended"]
    loads = [r["load_1m"] for r in rows if "load_1m" in r]
    out = [
        f"{meta['date']}; {meta['machine']}; {meta['processor']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        "",
        f"1-minute load average during the run: {min(loads):.1f}–{max(loads):.1f} "
        f"({meta['machine'].split(',')[1].strip()}).",
        "",
        "Uncontended acquire + release:",
        "",
        "| system | µs per acquire+release | CPU µs |",
        "| --- | ---: | ---: |",
    ]
    for name, u in data["uncontended"].items():
        wall, cpu = u["us_per_acquire_release"], u["cpu_us_per_acquire_release"]
        out.append(f"| {name} | {wall:.2f} | {cpu:.2f} |")
    out += [
        "",
        "Contended:",
        "",
        "| agents | capacity | system | acquires/s | CPU µs/acquire | p50 wait ms | p99 wait ms |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r['agents']:,} | {r['capacity']} | {r['system']} | {fmt(r['acquires_per_s'], 0)} "
            f"| {fmt(r['cpu_us_per_acquire'])} | {fmt(r['wait_p50_ms'], 2)} "
            f"| {fmt(r['wait_p99_ms'], 2)} |"
        )
    choice = data["choice_us"]
    out += [
        "",
        "corral's choice alone (the `WaitQueue`, no asyncio):",
        "",
        "| waiting agents | " + " | ".join(f"{int(n):,}" for n in choice) + " |",
        "| --- |" + " ---: |" * len(choice),
        "| µs per serve + requeue | " + " | ".join(f"{v:.1f}" for v in choice.values()) + " |",
        "",
        "Against the targets (computed from the figures above):",
        "",
        "| target | measured |",
        "| --- | --- |",
    ]
    corral_u = data["uncontended"].get("corral")
    if corral_u:
        out.append(f"| uncontended under 5 µs | {corral_u['us_per_acquire_release']:.2f} µs |")
    caps = sorted({r["capacity"] for r in rows})
    agents = sorted({r["agents"] for r in rows})
    for n in (8, 100):
        parts = []
        for cap in caps:
            c, s = cell(rows, "corral", n, cap), cell(rows, "semaphore", n, cap)
            if c and s and c["cpu_us_per_acquire"] and s["cpu_us_per_acquire"]:
                ratio = c["cpu_us_per_acquire"] / s["cpu_us_per_acquire"]
                parts.append(f"{ratio:.1f}x at capacity {cap}")
        if parts:
            out.append(f"| CPU per acquire ≤ 5x the semaphore's, {n} agents | {'; '.join(parts)} |")
    parts = []
    for cap in caps:
        c, lo = cell(rows, "corral", 1000, cap), cell(rows, "loco", 1000, cap)
        if c and lo and lo["acquires_per_s"]:
            parts.append(f"{c['acquires_per_s'] / lo['acquires_per_s']:.0f}x at capacity {cap}")
    if parts:
        out.append(f"| ≥ 20x loco's throughput at 1,000 agents | {'; '.join(parts)} |")
    for system in ("corral", "loco"):
        for cap in caps:
            curve = [cell(rows, system, n, cap) for n in agents]
            values = [fmt(c["cpu_us_per_acquire"], 0) for c in curve if c]
            if values:
                out.append(
                    f"| CPU µs/acquire by agents ({', '.join(f'{n:,}' for n in agents)}), "
                    f"{system}, capacity {cap} | {' → '.join(values)} |"
                )
    return "\n".join(out) + "\n"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench/results/contention.json"
    print(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
