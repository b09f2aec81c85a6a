"""Ack and lease in one call: what a worker whose runs just ended does next.

A worker at concurrency N acks the runs that ended and leases their slots again. Written as
two calls, each is a durable commit, and the lease waits on the tenant row the ack holds until
that commit: two commits in sequence per cycle, at concurrency 1 per run. ``ack_and_lease``
does both in one call: on PostgreSQL, when the one-statement lease applies, as one statement
(``ack_lease_fast``: one round trip, one commit); on SQLite, whose write transactions
exclude every other writer, as both verbs' steps in one transaction; otherwise as
``ack_many`` then ``lease``. The outcome is that of the two calls in that order (the
statement's comment names the one difference; acks of runs with a parent, which the worker
sends to its batcher instead, see ``Store.ack_and_lease``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from corral.dispatch.policy import MIN_RUN_COST
from corral.models import Ack, AckedAndLeased, Lease, RunStatus
from corral.store.sql_lease import LEASE_COLUMNS, LeaseMixin, lease_from_row
from corral.store.sql_queue import QueueMixin, ack_arrays, ack_params
from corral.store.transaction import Transaction

log = logging.getLogger(__name__)


class AckLeaseMixin(QueueMixin, LeaseMixin):
    async def ack_and_lease(
        self,
        acks: Sequence[Ack],
        worker_id: str,
        ttl: float,
        limit: int,
        *,
        light_below: int | None = None,
    ) -> AckedAndLeased:
        """``ack_many(acks)``, then ``lease(worker_id, ttl, limit, light_below=...)``."""
        now = self.clock()
        if not acks or limit <= 0:
            lost = await self.ack_many(acks)
            leases = await self.lease(worker_id, ttl, limit, light_below=light_below)
            return AckedAndLeased(lost, leases)
        if light_below is None and "ack_lease_fast" in self.q and self._fast_lease_applies(now):
            return await self._ack_lease_fast(acks, now, worker_id, ttl, limit)
        if self.writes_serialized:
            return await self._ack_and_lease_in_one_tx(
                acks, now, worker_id, ttl, limit, light_below
            )
        lost = await self.ack_many(acks)
        leases = await self.lease(worker_id, ttl, limit, light_below=light_below)
        return AckedAndLeased(lost, leases)

    async def _ack_lease_fast(
        self, acks: Sequence[Ack], now: float, worker_id: str, ttl: float, limit: int
    ) -> AckedAndLeased:
        """One statement (PostgreSQL), then what it leaves: the acks of runs with a parent
        (and refused ones), and a lease of the slots those acks free."""
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
        acked = frozenset(rows[0][LEASE_COLUMNS + 2] or ()) if rows else frozenset()
        if acked:
            self._signal_local_work()
        leases = [lease_from_row(r) for r in rows if r[0] is not None]
        short = len(leases) < (int(rows[0][LEASE_COLUMNS + 1] or 0) if rows else 0)
        # From here on the leases above are committed: an error must not keep them from the
        # caller (they would sit leased to nobody until their TTL, an attempt spent).
        rest = [a for a in acks if a.run_id not in acked]
        lost: frozenset[str] = frozenset()
        unwritten: tuple[Ack, ...] = ()
        if rest:
            # runs with a parent to wake (left to the general path, as ack_fast does), or
            # whose lease was lost
            try:
                lost = await self._ack_batch(rest, now)
            except Exception as exc:
                log.warning("ack and lease: %d acks left for the caller: %s", len(rest), exc)
                unwritten = tuple(rest)
        try:
            if not unwritten and len(rest) > len(lost) and len(leases) < limit:
                # those acks freed slots the statement did not count: lease them too
                leases += await self._lease_general(now, worker_id, ttl, limit - len(leases), None)
            else:
                leases = await self._after_fast_lease(
                    leases, short, now, worker_id, ttl, limit, None
                )
        except Exception as exc:
            log.warning("ack and lease: the lease after the statement failed: %s", exc)
        return AckedAndLeased(lost, leases, unwritten)

    async def _ack_and_lease_in_one_tx(
        self,
        acks: Sequence[Ack],
        now: float,
        worker_id: str,
        ttl: float,
        limit: int,
        light_below: int | None,
    ) -> AckedAndLeased:
        """Both verbs' bodies in one write transaction, for a backend whose write
        transactions exclude every other writer (SQLite): no other transaction's locks to
        order against, one commit and one trip to the store's thread instead of two."""
        maintain = self._maintenance_due(now)
        lift = maintain and self._undue_lift_due(now)

        async def body(tx: Transaction) -> tuple[frozenset[str], list[Lease]]:
            lost = await self._finish_in_tx(
                tx,
                query=self.q["ack_run"],
                params=ack_params(acks, now),
                run_ids=[a.run_id for a in acks],
                status=RunStatus.SUCCEEDED,
            )
            leases = await self._lease_in_tx(
                tx,
                now=now,
                worker_id=worker_id,
                ttl=ttl,
                limit=limit,
                light_below=light_below,
                maintain=maintain,
                lift=lift,
            )
            return lost, leases

        lost, leases = await self._tx(body)
        if maintain:
            self._last_maintenance = now
        if lift:
            self._last_undue_lift = now
        self._signal_local_work()
        return AckedAndLeased(lost, leases)
