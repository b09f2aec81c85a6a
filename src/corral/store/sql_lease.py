"""Leasing: which runs a worker gets, in one transaction that holds with any number of workers.

One lease, in order:
1. reclaim expired leases and fire due timers (run rows, ``SKIP LOCKED``: never waits);
2. choose candidate tenants from an unlocked snapshot (tenant mode: lowest virtual time
   first, see dispatch/policy.py; fifo mode: the tenants of the oldest runnable runs);
3. lock every tenant row this lease touches, in sorted order, waiting rather than skipping —
   skipping a busy row would hand its slot to a tenant further above its share. Locked rows
   give fresh counters: caps are checked against them, so they hold across workers;
   Only the tenants a first allocation on the snapshot would use are locked;
4. fill the slots in rounds among them: allocate on the fresh counters, take runs (``SKIP
   LOCKED``), and offer the slots a tenant could not fill (its queued runs are delayed, or
   taken by a concurrent lease) to the others;
5. write all tenant counter changes, again in sorted order, charging each served tenant's
   virtual time for the leases it got.

On PostgreSQL, when no global cap is set, steps 2-5 run as one statement (``lease_fast`` in
sql/postgres/queries.sql, the allocation written as "the ``slots`` lowest start tags"): one
round trip instead of five. If it allocated slots but concurrent leases had taken every run,
the general path runs and re-offers them. Step 1, when due, then runs in the background after
a lease that got runs (so it never delays the runs it hands out) and inside the general path
of a lease that got none (so an expired lease is leasable by the very next lease call).

Run rows are only ever taken with SKIP LOCKED or waited on after tenant rows are released, and
tenant rows are always locked in sorted order, so leases, acks and submits form no lock cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from corral.config import UNLIMITED
from corral.dispatch import TenantLoad, allocate
from corral.dispatch.policy import MIN_RUN_COST
from corral.models import Lease, RunStatus
from corral.store.sql_base import (
    EXPIRY_DEAD_LETTERS,
    Deltas,
    SqlBase,
    count_delivery,
    count_ended,
    delta,
    dumps,
    loads,
    merge,
    tenant_counter_params,
)
from corral.store.transaction import Row, Transaction

log = logging.getLogger(__name__)

#: reclaiming expired leases and firing due timers happens at most this often per process
#: (seconds): it is a scan, and the lease's hot path should not pay for it every time
MAINTENANCE_INTERVAL = 0.25
#: tenants whose queued runs are all due later are lifted to the fair-share floor at most this
#: often per process (seconds): each lift writes every such tenant's row that the floor has
#: passed, and between lifts such a tenant banks at most this long's worth of credit
UNDUE_LIFT_INTERVAL = 5.0
#: with no global cap set, leases skip its row and re-check this often (seconds), so a cap set
#: by another process applies within that time
GLOBAL_CAP_RECHECK = 1.0


class LeaseMixin(SqlBase):
    async def lease(
        self, worker_id: str, ttl: float, limit: int, *, light_below: int | None = None
    ) -> list[Lease]:
        """Up to ``limit`` runs, chosen fairly. With ``light_below``, only runs of tenants that
        have fewer than that many runs in flight, and no more than brings a tenant to it (what
        a worker's express slots take)."""
        if limit <= 0:
            return []
        now = self.clock()
        if self._fast_lease_applies(now):
            light = UNLIMITED if light_below is None else max(0, light_below)
            take = {"owner": worker_id, "expires_at": now + ttl, "now": now}
            leases, short = await self._lease_fast(take, limit, light)
            return await self._after_fast_lease(
                leases, short, now, worker_id, ttl, limit, light_below
            )
        return await self._lease_general(now, worker_id, ttl, limit, light_below)

    def _maintenance_due(self, now: float) -> bool:
        return not (0 <= now - self._last_maintenance < MAINTENANCE_INTERVAL)

    def _undue_lift_due(self, now: float) -> bool:
        return not (0 <= now - self._last_undue_lift < UNDUE_LIFT_INTERVAL)

    async def _after_fast_lease(
        self,
        leases: list[Lease],
        short: bool,
        now: float,
        worker_id: str,
        ttl: float,
        limit: int,
        light_below: int | None,
    ) -> list[Lease]:
        """What the one-statement lease got, or the general path when it has to run."""
        maintain = self._maintenance_due(now)
        if leases:
            if maintain:
                self._maintain_soon(now)
            return leases
        if not short and not maintain:
            return leases
        # nothing leased: maintenance due may requeue expired runs, or slots were allocated
        # but concurrent leases took every run (the general path re-offers them)
        return await self._lease_general(now, worker_id, ttl, limit, light_below)

    async def _lease_general(
        self, now: float, worker_id: str, ttl: float, limit: int, light_below: int | None
    ) -> list[Lease]:
        """The lease in steps (module docstring), maintenance included when it is due."""
        maintain = self._maintenance_due(now)
        lift = maintain and self._undue_lift_due(now)
        leases = await self._tx(
            functools.partial(
                self._lease_in_tx,
                now=now,
                worker_id=worker_id,
                ttl=ttl,
                limit=limit,
                light_below=light_below,
                maintain=maintain,
                lift=lift,
            )
        )
        if maintain:
            self._last_maintenance = now
        if lift:
            self._last_undue_lift = now
        return leases

    async def _lease_in_tx(
        self,
        tx: Transaction,
        *,
        now: float,
        worker_id: str,
        ttl: float,
        limit: int,
        light_below: int | None,
        maintain: bool,
        lift: bool,
    ) -> list[Lease]:
        """The body of ``_lease_general``, in the caller's transaction (re-runnable)."""
        take = {"owner": worker_id, "expires_at": now + ttl, "now": now}
        light = UNLIMITED if light_below is None else max(0, light_below)
        fair = self.config.fairness == "tenant" or light_below is not None
        deltas: Deltas = {}
        if lift:
            await tx.execute(self.q["lift_undue_tenants"], {"now": now})
        if maintain:
            merge(deltas, await self._reap_expired(tx, now))
            merge(deltas, await self._wake_timers(tx, now))
            await self._drop_dead_offers(tx)
        requeued = any(d[0] > 0 for d in deltas.values())
        slots = await self._global_slots(tx, limit)
        wanted: list[str] = []
        first: dict[str, int] = {}
        snapshot: list[TenantLoad] = []
        oldest: list[Row] = []
        fresh: dict[str, TenantLoad] = {}
        if slots > 0 and fair:
            rows = await tx.fetchall(
                self.q["candidate_tenants"], {"now": now, "limit": slots, "light_below": light}
            )
            snapshot = [_light(TenantLoad(*r), light) for r in rows]
            if self.writes_serialized:
                fresh = {c.tenant: c for c in snapshot}
            # tenants whose runs were just requeued above are candidates too: their
            # counters in the table do not show those runs until this lease settles. Ranked
            # on their own counters (placeholders of vtime 0 took the first slots ahead of
            # tenants further behind, and kept those out of the tenants locked below)
            seen = {c.tenant for c in snapshot}
            reclaimed = sorted(t for t, d in deltas.items() if d[0] > 0 and t not in seen)
            if reclaimed:
                loaded = await tx.fetch_each(
                    self.q["tenant_load"], [{"tenant": t} for t in reclaimed]
                )
                snapshot += [
                    _light(_with_deltas(TenantLoad(*r[0]), deltas), light) for r in loaded if r
                ]
            # lock only the tenants a first allocation on the snapshot would use
            first = allocate(snapshot, slots)
            wanted = [c.tenant for c in snapshot if c.tenant in first]
        elif slots > 0:
            oldest = await self._pick_oldest(tx, now, slots, set())
            wanted = list(dict.fromkeys(r[1] for r in oldest))
        touched = set(deltas) | set(wanted)
        loads_ = await self._lock_tenants(tx, sorted(touched - set(fresh)), deltas)
        for tenant in touched & set(fresh):
            loads_[tenant] = _with_deltas(fresh[tenant], deltas)
        leases: list[Lease] = []
        if slots > 0 and fair:
            fill = [_light(loads_[t], light) for t in wanted if t in loads_]
            # counters unchanged since the snapshot (SQLite, nothing reaped): the first
            # allocation stands, as allocating again on the same loads would give it
            planned = first if fill == [c for c in snapshot if c.tenant in first] else None
            leases = await self._fill_fair(tx, slots, fill, take, planned)
        elif slots > 0:
            leases = await self._fill_oldest(tx, slots, oldest, loads_, deltas, take)
        if leases and "offer_taken" in self.q:
            # slots this worker offered for handoffs are now filled (submit_one)
            await tx.execute(self.q["offer_taken"], {"owner": worker_id, "n": len(leases)})
        served = Counter(lease.tenant for lease in leases)
        for lease in leases:
            count_delivery(deltas, lease.tenant, lease.attempt)
        for tenant, n in served.items():
            d = delta(deltas, tenant)
            d[0] -= n
            d[1] += n
        await tx.execute_many(
            self.q["settle_tenant"],
            [
                {
                    "tenant": t,
                    **tenant_counter_params(deltas, t),
                    "served": 1 if t in served else 0,
                    "charge": served[t] * loads_[t].charge if t in served else 0.0,
                    "now": now,
                }
                for t in sorted(deltas)
            ],
        )
        if requeued:
            await tx.execute(self.q["notify_work"])
        return leases

    def _maintain_soon(self, now: float) -> None:
        """Start maintenance in the background unless it is already running."""
        if self._maintenance is not None and not self._maintenance.done():
            return
        self._last_maintenance = now
        self._maintenance = asyncio.create_task(self._maintain(now), name="corral-maintenance")

    async def _maintain(self, now: float) -> None:
        """Reclaim expired leases and fire due timers in a transaction of their own; lift the
        tenants whose runs are all due later (every ``UNDUE_LIFT_INTERVAL``); re-read the
        global cap too, so the fast lease keeps applying under steady load."""

        lift = self._undue_lift_due(now)

        async def body(tx: Transaction) -> None:
            if lift:  # tenants whose runs are all due later bank no credit while they wait
                await tx.execute(self.q["lift_undue_tenants"], {"now": now})
            deltas = merge(await self._reap_expired(tx, now), await self._wake_timers(tx, now))
            await self._drop_dead_offers(tx)
            await self._global_slots(tx, 1, refresh=True)
            await self._adjust_tenants(tx, deltas)  # notifies when runs were requeued

        try:
            await self._tx(body)
            if lift:
                self._last_undue_lift = now
        except Exception as exc:  # the next due lease runs it again, in its own path
            log.warning("background maintenance failed: %s", exc)
            self._last_maintenance = float("-inf")

    async def _drop_dead_offers(self, tx: Transaction) -> None:
        """Forget the handoff offers of workers that died (PostgreSQL; see offer_slots)."""
        if "drop_dead_offers" in self.q:
            await tx.execute(self.q["drop_dead_offers"])

    async def _finish_maintenance(self) -> None:
        """Wait for background maintenance (store close)."""
        if self._maintenance is not None:
            with contextlib.suppress(Exception):
                await self._maintenance
            self._maintenance = None

    def _fast_lease_applies(self, now: float) -> bool:
        """One-statement lease (PostgreSQL): tenant fairness, no global cap (as last seen)."""
        return (
            "lease_fast" in self.q
            and self.config.fairness == "tenant"
            and self._global_cap_unset_at is not None
            and 0 <= now - self._global_cap_unset_at < GLOBAL_CAP_RECHECK
        )

    async def _lease_fast(
        self, take: dict[str, Any], limit: int, light_below: int
    ) -> tuple[list[Lease], bool]:
        """The lease in one statement; also says whether slots were allocated but not filled."""
        rows = await self._hot_statement(
            "lease_fast",
            {**take, "slots": limit, "min_cost": MIN_RUN_COST, "light_below": light_below},
        )
        leases = [lease_from_row(r) for r in rows if r[0] is not None]
        wanted = int(rows[0][LEASE_COLUMNS]) if rows else 0
        return leases, len(leases) < wanted

    async def _global_slots(self, tx: Transaction, limit: int, *, refresh: bool = False) -> int:
        # No cap (the common case): skip locking the cap row, re-checking now and then, so a
        # cap set by another process applies here within a second.
        now = self.clock()
        unset_at = self._global_cap_unset_at
        if not refresh and unset_at is not None and 0 <= now - unset_at < GLOBAL_CAP_RECHECK:
            return limit
        cap_row = await tx.fetchone(self.q["global_cap"])
        self._global_cap_unset_at = now if cap_row is None or cap_row[0] is None else None
        if cap_row is None or cap_row[0] is None:
            return limit
        used = await tx.fetchone(self.q["total_in_flight"])
        return max(0, min(limit, int(cap_row[0]) - int(used[0] if used else 0)))

    async def _lock_tenants(
        self, tx: Transaction, tenants: list[str], deltas: Deltas
    ) -> dict[str, TenantLoad]:
        """Lock tenant rows (sorted) and return their counters with ``deltas`` applied."""
        rows = await tx.fetch_each(self.q["lock_tenant"], [{"tenant": t} for t in tenants])
        found: dict[str, TenantLoad] = {}
        for result in rows:
            if result:
                load = _with_deltas(TenantLoad(*result[0]), deltas)
                found[load.tenant] = load
        return found

    async def _fill_fair(
        self,
        tx: Transaction,
        slots: int,
        loads_: list[TenantLoad],
        take: dict[str, Any],
        planned: dict[str, int] | None = None,
    ) -> list[Lease]:
        """Lease ``slots`` runs among ``loads_`` by ``allocate``, offering a tenant's share
        that it could not fill to the others. ``planned``: ``allocate(loads_, slots)``, when
        the caller has it already."""
        granted: Counter[str] = Counter()
        exhausted: set[str] = set()
        leases: list[Lease] = []
        while slots > 0:
            if planned is not None:
                shares, planned = planned, None
            else:
                shares = allocate(
                    [
                        TenantLoad(
                            c.tenant,
                            c.in_flight + granted[c.tenant],
                            c.cap,
                            c.weight,
                            0 if c.tenant in exhausted else c.queued - granted[c.tenant],
                            c.vtime + granted[c.tenant] * c.charge,
                            c.cost,
                        )
                        for c in loads_
                    ],
                    slots,
                )
            if not shares:
                break
            taken = await self._take_shares(tx, shares, take)
            for (tenant, n), rows in zip(shares.items(), taken, strict=True):
                granted[tenant] += len(rows)
                if len(rows) < n:
                    exhausted.add(tenant)  # delayed runs, or taken by another lease
                # RETURNING keeps no order: a tenant's runs in the order they were chosen
                rows.sort(key=lambda r: r[LEASE_COLUMNS])
                leases.extend(lease_from_row(r) for r in rows)
                slots -= len(rows)
        return leases

    async def _take_shares(
        self, tx: Transaction, shares: dict[str, int], take: dict[str, Any]
    ) -> list[list[Row]]:
        """Lease each tenant's next ``shares[tenant]`` runs; the rows taken, per tenant."""
        if "take_tenants_runs" not in self.q:
            return await tx.fetch_each(
                self.q["take_tenant_runs"],
                [{"tenant": t, "n": n, **take} for t, n in shares.items()],
            )
        params = dict(take)
        for i, (tenant, n) in enumerate(shares.items()):
            params[f"tenant_{i}"] = tenant
            params[f"n_{i}"] = n
        rows = await tx.fetchall(_take_tenants_sql(self.q, len(shares)), params)
        taken: dict[str, list[Row]] = {tenant: [] for tenant in shares}
        for row in rows:
            taken[row[2]].append(row)
        return list(taken.values())

    async def _fill_oldest(
        self,
        tx: Transaction,
        slots: int,
        oldest: list[Row],
        loads_: dict[str, TenantLoad],
        deltas: Deltas,
        take: dict[str, Any],
    ) -> list[Lease]:
        """fifo: the oldest runs within each tenant's headroom. When a tenant's headroom runs
        out before its runs among the oldest do, look again past that tenant, so its slots
        go to the next oldest runs of others rather than stay idle."""
        headroom = {t: load.cap - load.in_flight for t, load in loads_.items()}
        full: set[str] = set()
        leases: list[Lease] = []
        rows = oldest
        while True:
            ids: list[str] = []
            for run_id, tenant in rows:
                if headroom.get(tenant, 0) > 0:
                    headroom[tenant] -= 1
                    ids.append(run_id)
                else:
                    full.add(tenant)
            leases.extend(await self._take(tx, ids, take))
            if len(leases) >= slots or len(ids) == len(rows):
                return leases
            rows = await self._pick_oldest(tx, take["now"], slots - len(leases), full)
            # tenants first seen now: their fresh counters decide (on PostgreSQL this locks
            # rows out of sorted order; a deadlock with another lease is retried whole)
            new = sorted({t for _, t in rows} - set(loads_))
            for tenant, load in (await self._lock_tenants(tx, new, deltas)).items():
                loads_[tenant] = load
                headroom[tenant] = load.cap - load.in_flight

    async def _pick_oldest(self, tx: Transaction, now: float, n: int, full: set[str]) -> list[Row]:
        """fifo: (run id, tenant) of the ``n`` oldest runnable runs of tenants below their caps
        and not in ``full``, oldest first: a merge of the tenants' own queues. PostgreSQL does
        it in one statement; SQLite, which has no LATERAL, first finds the tenants whose first
        runs are oldest (only their runs can be among the oldest), then merges their queues."""
        params: dict[str, Any] = {"now": now, "n": n, "full": json.dumps(sorted(full))}
        if "oldest_heads" not in self.q:
            return await tx.fetchall(self.q["pick_oldest_runs"], params)
        heads = [row[0] for row in await tx.fetchall(self.q["oldest_heads"], params)]
        if not heads:
            return []
        for i, tenant in enumerate(heads):
            params[f"tenant_{i}"] = tenant
        merge_sql = _union_of_picks(
            self.q["merge_oldest_picks"], self.q["tenant_oldest_pick"], len(heads)
        )
        return await tx.fetchall(merge_sql, params)

    async def _take(self, tx: Transaction, ids: list[str], take: dict[str, Any]) -> list[Lease]:
        if not ids:
            return []
        rows = await tx.fetch_each(self.q["lease_run"], [{"id": i, **take} for i in ids])
        return [lease_from_row(r[0]) for r in rows if r]

    async def _reap_expired(self, tx: Transaction, now: float) -> Deltas:
        """Hand expired leases back (or end their runs); returns tenant counter deltas."""
        expired = await tx.fetchall(
            self.q["select_expired"], {"now": now, "limit": self.config.reap_batch}
        )
        if not expired:
            return {}
        error = dumps({"type": "LeaseExpired", "message": "lease expired on every attempt"})
        rows = await tx.fetch_each(
            self.q["expire_run"], [{"id": r[0], "now": now, "error": error} for r in expired]
        )
        deltas: Deltas = {}
        ended = []
        entries = []
        for (run_id,), result in zip(expired, rows, strict=True):
            if result:
                tenant, status, parent, seq, attempt, epoch = result[0]
                entries.append(
                    {
                        "id": run_id,
                        "seq": int(seq),
                        "now": now,
                        "data": dumps(
                            {"attempt": int(attempt), "epoch": int(epoch), "then": str(status)}
                        ),
                    }
                )
                d = delta(deltas, tenant)
                d[1] -= 1
                if status == RunStatus.QUEUED:
                    d[0] += 1
                else:
                    count_ended(deltas, tenant, status)
                    if status == RunStatus.FAILED:
                        d[EXPIRY_DEAD_LETTERS] += 1
                    ended.append((run_id, parent))
        # the event stream and `corral runs journal` show the expiry, not only the next attempt
        if entries:
            await tx.execute_many(self.q["expiry_entry"], entries)
        return merge(deltas, await self._wake_parents(tx, ended, now))


@functools.lru_cache(maxsize=256)
def _union_of_picks(template: str, pick: str, tenants: int) -> str:
    """``template`` with ``{picks}``: ``pick`` once per tenant (``{i}`` numbering each copy's
    parameters), joined by UNION ALL."""
    picks = " UNION ALL ".join(pick.replace("{i}", str(i)) for i in range(tenants))
    return template.replace("{picks}", picks)


def _take_tenants_sql(queries: Mapping[str, str], tenants: int) -> str:
    """take_tenants_runs for ``tenants`` tenants (one text per count: statement caches hit)."""
    return _union_of_picks(queries["take_tenants_runs"], queries["tenant_runs_pick"], tenants)


def _light(load: TenantLoad, light_below: int) -> TenantLoad:
    """``load`` as an express lease sees it: its cap lowered to ``light_below``."""
    if load.cap <= light_below:
        return load
    return dataclasses.replace(load, cap=light_below)


def _with_deltas(load: TenantLoad, deltas: Deltas) -> TenantLoad:
    if load.tenant not in deltas:
        return load
    dq, df = deltas[load.tenant][:2]
    return TenantLoad(
        load.tenant,
        load.in_flight + df,
        load.cap,
        load.weight,
        load.queued + dq,
        load.vtime,
        load.cost,
    )


#: the columns of a lease row that lease_from_row reads; queries that return more put them
#: after these (the sort key, the one-statement leases' counts)
LEASE_COLUMNS = 14


def lease_from_row(r: Row) -> Lease:
    return Lease(
        run_id=r[0],
        epoch=int(r[1]),
        tenant=r[2],
        agent=r[3],
        input=loads(r[4]),
        attempt=int(r[5]),
        max_attempts=int(r[6]),
        expires_at=float(r[7]),
        root_id=r[8],
        parent_id=r[9],
        depth=int(r[10]),
        journal_seq=int(r[11]),
        timeout=None if r[12] is None else float(r[12]),
        start_by=None if r[13] is None else float(r[13]),
    )
