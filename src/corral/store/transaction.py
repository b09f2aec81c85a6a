"""The narrow statement interface both SQL backends give the shared store logic.

Queries are addressed by name (see ``queries.py``); rows come back as tuples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Params = Mapping[str, Any]
Row = tuple[Any, ...]


class Transaction(Protocol):
    async def fetchall(self, query: str, params: Params | None = None) -> list[Row]: ...

    async def fetchone(self, query: str, params: Params | None = None) -> Row | None: ...

    async def fetch_dicts(
        self, query: str, params: Params | None = None
    ) -> list[dict[str, Any]]: ...

    async def execute(self, query: str, params: Params | None = None) -> None: ...

    async def fetch_each(self, query: str, params: Sequence[Params]) -> list[list[Row]]:
        """Run one statement once per parameter set (pipelined where the driver can);
        return the rows of each execution, in order."""
        ...

    async def execute_many(self, query: str, params: Sequence[Params]) -> None: ...
