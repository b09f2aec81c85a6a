"""Expiry: ending the runs that were not started within their ``start_within``.

A worker that leases such a run ends it without calling its agent, but a run of a tenant at
its cap (or of a busy deployment) may wait far past its limit for that lease: counted all the
while in the tenant's depth and queued quota, and its submitter (or waiting parent) learning
nothing. Every worker therefore looks, every few seconds, for undelivered runs past their
limit (a read through an index that holds only runs with a limit) and ends those it finds as
``failed`` with ``RunExpired``, as a worker's lease would have, except that no attempt is
counted: the run was never delivered.
"""

from __future__ import annotations

from corral.errors import RunExpired
from corral.models import RunStatus
from corral.store.sql_base import Deltas, SqlBase, count_ended, delta, dumps, merge
from corral.store.transaction import Row, Transaction


class ExpiryMixin(SqlBase):
    async def expire_overdue(self, *, limit: int = 500) -> int:
        """End up to ``limit`` undelivered runs whose first attempt had to start before now
        as ``failed`` with ``RunExpired`` (their waiting parents see the failure); returns
        how many. Finding none takes no write lock."""
        now = self.clock()
        args = {"now": now, "limit": limit}

        async def find(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["overdue_runs"], args)

        overdue = [(str(r[0]), float(r[1])) for r in await self._read(find)]
        if not overdue:
            return 0

        async def body(tx: Transaction) -> tuple[int, bool]:
            deltas: Deltas = {}
            ended: list[tuple[str, str | None]] = []
            for run_id, start_by in overdue:
                expired = RunExpired(run_id, now - start_by)
                record = {"type": type(expired).__name__, "message": str(expired), "attempt": 0}
                at = {"id": run_id, "now": now, "error": dumps(record)}
                row = await tx.fetchone(self.q["end_overdue_run"], at)
                if row is None:
                    continue  # a worker leased it first, or it was cancelled
                tenant, parent_id = row
                delta(deltas, tenant)[0] -= 1
                count_ended(deltas, tenant, RunStatus.FAILED)
                ended.append((run_id, parent_id))
            merge(deltas, await self._wake_parents(tx, ended, now))
            woke = await self._adjust_tenants(tx, deltas)
            return len(ended), woke

        count, woke = await self._tx(body)
        if woke:
            self._signal_local_work()
        return count
