"""Terminal tables of the CLI. rich is imported when a command first prints one, not when the
CLI starts: most commands (a worker, a submit) print a line or two, and importing rich cost
about 40 ms of every start, a worker's included."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text


@cache
def console() -> Console:
    from rich.console import Console

    return Console()


def styled(text: str, style: str) -> Text:
    """A table cell shown in ``style`` (rich's style names: "bold", "red")."""
    from rich.text import Text

    return Text(text, style=style)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str | Text]]) -> None:
    """Print ``rows`` under ``headers``, unboxed. A ``str`` cell is shown as it is, never read
    as rich markup: names come from users, and a tenant named "[red]x" lost its brackets
    while one named "a[/b]" stopped the command with rich's MarkupError. A cell from
    ``styled`` keeps its style."""
    from rich.table import Table
    from rich.text import Text

    table = Table(*headers, box=None)
    for row in rows:
        table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in row))
    out = console()
    if not out.is_terminal:
        # piped or redirected: whole cells for whoever reads it, not a table cut to 80 columns
        from rich.console import Console

        out = Console(width=max(out.width, 1000))
    out.print(table)
