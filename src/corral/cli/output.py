"""Terminal tables of the CLI. rich is imported when a command first prints one, not when the
CLI starts: most commands (a worker, a submit) print a line or two, and importing rich cost
about 40 ms of every start, a worker's included."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@cache
def console() -> Console:
    from rich.console import Console

    return Console()


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Print ``rows`` under ``headers``, unboxed (cells may use rich markup)."""
    from rich.table import Table

    table = Table(*headers, box=None)
    for row in rows:
        table.add_row(*row)
    out = console()
    if not out.is_terminal:
        # piped or redirected: whole cells for whoever reads it, not a table cut to 80 columns
        from rich.console import Console

        out = Console(width=max(out.width, 1000))
    out.print(table)
