"""What the HTTP service asks of the store: API keys (stored hashed, mapped to a tenant) and a
few read-only queries — a health ping, a run's children, and the delivery figures ``/metrics``
exports (queue waits of newly started runs, redeliveries, lease-expiry dead letters).

Queries live in ``sql/<dialect>/api_keys.sql`` and ``sql/<dialect>/api_queries.sql``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral.errors import InvalidInput
from corral.models import Run, RunStatus
from corral.store.sql_base import SqlBase, run_from_row
from corral.store.transaction import Row, Transaction


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: never the token itself, only who it speaks for."""

    id: str
    tenant: str
    admin: bool
    label: str | None
    created_at: float
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class DeliveryCounters:
    #: deliveries beyond the first, summed over every run (retries after failures and
    #: redeliveries after expired leases alike)
    redeliveries: int
    #: runs dead-lettered because their lease expired on their last attempt
    lease_expiry_dead_letters: int
    #: runs still marked running whose lease has expired (not yet reclaimed by a lease call)
    expired_unreclaimed: int
    #: runs handed to a waiting worker at submit, started without a lease (PostgreSQL)
    handoffs: int = 0


def _key_from_row(r: Row) -> ApiKey:
    return ApiKey(
        id=r[0],
        tenant=r[1],
        admin=bool(r[2]),
        label=r[3],
        created_at=float(r[4]),
        revoked_at=None if r[5] is None else float(r[5]),
    )


class ApiKeysMixin(SqlBase):
    async def create_api_key(
        self,
        key_id: str,
        key_hash: str,
        tenant: str,
        *,
        admin: bool = False,
        label: str | None = None,
    ) -> ApiKey:
        """Store a key by the hash of its token (the caller makes and shows the token)."""
        if not key_id or not key_hash or not tenant:
            raise InvalidInput("an API key needs an id, a token hash and a tenant")
        now = self.clock()

        async def body(tx: Transaction) -> None:
            await tx.execute(
                self.q["insert_api_key"],
                {
                    "id": key_id,
                    "key_hash": key_hash,
                    "tenant": tenant,
                    "admin": 1 if admin else 0,
                    "label": label,
                    "now": now,
                },
            )

        await self._tx(body)
        return ApiKey(key_id, tenant, admin, label, now)

    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The live (not revoked) key whose token hashes to ``key_hash``."""

        async def body(tx: Transaction) -> Row | None:
            return await tx.fetchone(self.q["api_key_by_hash"], {"key_hash": key_hash})

        row = await self._read(body)
        return None if row is None else _key_from_row(row)

    async def list_api_keys(self) -> list[ApiKey]:
        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["list_api_keys"])

        return [_key_from_row(r) for r in await self._read(body)]

    async def revoke_api_key(self, key_id: str) -> bool:
        """Revoke a key; False when no live key has that id."""
        now = self.clock()

        async def body(tx: Transaction) -> Row | None:
            return await tx.fetchone(self.q["revoke_api_key"], {"id": key_id, "now": now})

        return await self._tx(body) is not None


class ServiceReadsMixin(SqlBase):
    async def ping(self) -> None:
        """One round trip to the database (raises StoreUnavailable when it cannot)."""

        async def body(tx: Transaction) -> None:
            await tx.fetchone(self.q["ping"])

        await self._read(body)

    async def children(self, run_id: str, *, limit: int = 100) -> list[Run]:
        """Runs spawned by ``run_id``, oldest first."""

        async def body(tx: Transaction) -> list[dict[str, Any]]:
            return await tx.fetch_dicts(self.q["child_runs"], {"id": run_id, "limit": limit})

        return [run_from_row(r) for r in await self._read(body)]

    async def progress(self, run_ids: Sequence[str]) -> dict[str, tuple[RunStatus, int]]:
        """Status and journal length of each run that exists, in one read: what the event
        streams of many runs poll, instead of reading each run and its journal."""
        if not run_ids:
            return {}

        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["run_progress"], {"ids": json.dumps(list(run_ids))})

        return {str(r[0]): (RunStatus(r[1]), int(r[2])) for r in await self._read(body)}

    async def queue_waits(
        self, since: float, until: float, *, limit: int = 10_000
    ) -> list[tuple[float, float]]:
        """(started_at, seconds queued) of runs first leased in (since, until], in order."""

        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(
                self.q["queue_waits"], {"since": since, "until": until, "limit": limit}
            )

        return [(float(r[0]), max(0.0, float(r[1]))) for r in await self._read(body)]

    async def delivery_counters(self) -> DeliveryCounters:
        now = self.clock()

        async def body(tx: Transaction) -> tuple[Row | None, Row | None]:
            totals = await tx.fetchone(self.q["delivery_counters"])
            expired = await tx.fetchone(self.q["expired_unreclaimed"], {"now": now})
            return totals, expired

        totals, expired = await self._read(body)
        return DeliveryCounters(
            redeliveries=int(totals[0]) if totals else 0,
            lease_expiry_dead_letters=int(totals[1]) if totals else 0,
            expired_unreclaimed=int(expired[0]) if expired else 0,
            handoffs=int(totals[2]) if totals else 0,
        )


__all__ = ["ApiKey", "ApiKeysMixin", "DeliveryCounters", "ServiceReadsMixin"]
