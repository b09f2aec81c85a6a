"""Render a results file as the Markdown block the README carries:
``python -m bench.queue.report [bench/results/queue.json]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.queue.run import RESULTS, markdown_table


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    m = meta["machine"]
    pg = meta.get("postgresql", {})
    params = report.get("parameters", {})
    lines = [
        f"Measured {meta['date']} on {m['cpus']} cores ({m['cpu_model']}), {m['mem_gib']} GiB, "
        f"PostgreSQL {pg.get('server_version', '?')} with default settings "
        f"(shared_buffers {pg.get('shared_buffers', '?')}, synchronous_commit "
        f"{pg.get('synchronous_commit', '?')}), Python {meta['python']}; "
        f"{params.get('jobs', '?'):,} jobs per end-to-end run, cap {params.get('cap_s', '?')} s; "
        f"whole run {meta.get('total_seconds', '?')} s."
        + (
            f" corral at commit {meta['corral_git']['head']}"
            + (" plus uncommitted changes in src/." if meta["corral_git"].get("src_dirty") else ".")
            if meta.get("corral_git", {}).get("head")
            else ""
        ),
        "",
        markdown_table(report["results"]),
        "",
        "1-minute load average at the start / end of each scenario (2 cores; anything well "
        "above 1 means other work shared the CPUs with the benchmark):",
        "",
    ]
    for name, r in report["results"].items():
        loads = [
            f"{k} {v['loadavg_1m'][0]:.1f}/{v['loadavg_1m'][1]:.1f}"
            for k, v in r.items()
            if isinstance(v, dict) and "loadavg_1m" in v
        ]
        lines.append(f"- {r.get('label', name)}: " + ", ".join(loads))
    extra = []
    for name, r in report["results"].items():
        for key in ("e2e_c1", "e2e_c32"):
            e = r.get(key)
            if isinstance(e, dict) and "jobs_per_s_from_first_pickup" in e:
                extra.append(
                    f"{r.get('label', name)} {key}: {e['jobs_per_s_from_first_pickup']:,.0f}"
                )
    if extra:
        lines += ["", "End-to-end jobs/s counted from the first pickup (without worker start-up):"]
        lines += ["", "- " + "; ".join(extra)]
    tx = []
    for name, r in report["results"].items():
        for key in ("e2e_c1", "e2e_c32"):
            e = r.get(key)
            if isinstance(e, dict) and "worker_xacts_per_job" in e:
                tx.append(f"{r.get('label', name)} {key}: {e['worker_xacts_per_job']:.2f}")
    if tx:
        lines += [
            "",
            "PostgreSQL transactions per job of the worker in the end-to-end runs "
            "(pg_stat_database, the harness's own polls subtracted):",
            "",
            "- " + "; ".join(tx),
        ]
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    print(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
