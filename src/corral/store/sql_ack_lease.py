"""Ack and lease in one call: what a worker whose runs just ended does next.

A worker at concurrency N acks the runs that ended and leases their slots again. Written as
two calls, each is a durable commit, and the lease waits on the tenant row the ack holds until
that commit: two commits in sequence per cycle, at concurrency 1 per run. ``ack_and_lease``
does both in one call: on PostgreSQL, when the one-statement lease applies, as one statement
(``ack_lease_fast``: one round trip, one commit); otherwise as ``ack_many`` then ``lease``.
The outcome is that of the two calls in that order (see the statement for the two ways it
leans towards the cap).
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.dispatch.policy import MIN_RUN_COST
from corral.models import Ack, Lease
from corral.store.sql_lease import LeaseMixin, lease_from_row
from corral.store.sql_queue import QueueMixin, ack_arrays


class AckLeaseMixin(QueueMixin, LeaseMixin):
    async def ack_and_lease(
        self,
        acks: Sequence[Ack],
        worker_id: str,
        ttl: float,
        limit: int,
        *,
        light_below: int | None = None,
    ) -> tuple[frozenset[str], list[Lease]]:
        """``ack_many(acks)``, then ``lease(worker_id, ttl, limit, light_below=...)``: the
        ids whose lease was lost (those acks refused), and the runs leased."""
        now = self.clock()
        if not (
            acks
            and limit > 0
            and light_below is None
            and "ack_lease_fast" in self.q
            and self._fast_lease_applies(now)
        ):
            lost = await self.ack_many(acks)
            return lost, await self.lease(worker_id, ttl, limit, light_below=light_below)
        rows = await self._hot_statement(
            "ack_lease_fast",
            {
                **ack_arrays(acks, now),
                "owner": worker_id,
                "expires_at": now + ttl,
                "slots": limit,
                "min_cost": MIN_RUN_COST,
            },
        )
        acked = frozenset(rows[0][14] or ()) if rows else frozenset()
        if acked:
            self._signal_local_work()
        rest = [a for a in acks if a.run_id not in acked]
        # runs with a parent to wake, or whose lease was lost: the general path decides. Should
        # it fail, the caller writes these acks again, and the runs just leased come back when
        # their lease expires, as when a lease's answer is lost after its commit
        lost = await self._ack_batch(rest, now) if rest else frozenset()
        leases = [lease_from_row(r) for r in rows if r[0] is not None]
        short = len(leases) < (int(rows[0][13]) if rows else 0)
        return lost, await self._after_fast_lease(
            leases, short, now, worker_id, ttl, limit, light_below
        )
