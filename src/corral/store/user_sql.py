"""SQL that an agent runs inside a transactional step: the same transaction as the step's
journal entry, so the effect and the record of it commit together or not at all."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.store.queries import to_dialect
from corral.store.transaction import Row, Transaction


class StepTransaction:
    """The database handle a transactional step receives. Parameters are ``:name`` on every
    backend. It is valid only while the step's function runs."""

    def __init__(self, tx: Transaction, dialect: str) -> None:
        self._tx = tx
        self.dialect = dialect

    async def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        await self._tx.execute(to_dialect(sql, self.dialect), params)

    async def fetchall(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        return await self._tx.fetchall(to_dialect(sql, self.dialect), params)

    async def fetchone(self, sql: str, params: Mapping[str, Any] | None = None) -> Row | None:
        return await self._tx.fetchone(to_dialect(sql, self.dialect), params)
