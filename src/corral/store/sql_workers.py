"""Workers' reports of themselves: which workers there are, how busy, whether any is draining,
has agents stuck past their stop, or has gone silent (``corral workers``, GET /v1/workers,
the corral_workers metrics).

A report is one small upsert every third of the worker's lease TTL, off the path of any run.
A killed worker cannot delete its row: it reads as lost once a lease TTL has passed without a
report (by then its leases have run out too), and the next report of any worker deletes it an
hour later.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from corral.models import WorkerPresence
from corral.store.sql_base import SqlBase, dumps
from corral.store.transaction import Row, Transaction

#: seconds a silent worker's row is kept (shown as lost) before a report deletes it
FORGET_SILENT_AFTER = 3600.0


class WorkersMixin(SqlBase):
    async def report_worker(self, presence: WorkerPresence) -> None:
        """Write (or renew) ``presence``, the worker's report of itself."""
        row = asdict(presence)  # the query's parameters are its fields
        row["agents"] = dumps(list(presence.agents))
        silent = {"before": presence.seen_at - FORGET_SILENT_AFTER}

        async def body(tx: Transaction) -> None:
            await tx.execute(self.q["report_worker"], row)
            await tx.execute(self.q["forget_silent_workers"], silent)

        await self._tx(body)

    async def remove_worker(self, worker_id: str) -> None:
        """``worker_id`` has stopped: its report goes."""

        async def body(tx: Transaction) -> None:
            await tx.execute(self.q["remove_worker"], {"id": worker_id})

        await self._tx(body)

    async def workers(self) -> list[WorkerPresence]:
        """The workers' latest reports, by host and start (those silent for longer than
        ``FORGET_SILENT_AFTER`` left out)."""
        since = {"since": self.clock() - FORGET_SILENT_AFTER}

        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["list_workers"], since)

        return [
            WorkerPresence(
                worker_id=str(r[0]),
                host=str(r[1]),
                pid=int(r[2]),
                started_at=float(r[3]),
                seen_at=float(r[4]),
                lease_ttl=float(r[5]),
                concurrency=int(r[6]),
                express_slots=int(r[7]),
                busy=int(r[8]),
                stuck=int(r[9]),
                completed=int(r[10]),
                draining=bool(r[11]),
                agents=tuple(str(name) for name in json.loads(r[12])),
            )
            for r in await self._read(body)
        ]
