"""Queue verbs: submission, fair leasing, fenced writes, cancellation, the journal, reading.

Every verb is one transaction, run through ``_tx``, which a backend may retry whole on a
deadlock or a busy database: bodies are written to be re-runnable.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, TypeVar

from corral.dispatch.policy import MIN_RUN_COST
from corral.errors import (
    BackpressureError,
    LeaseLost,
    RunNotFound,
    RunNotRetryable,
)
from corral.models import (
    JSON,
    TERMINAL,
    Ack,
    Appended,
    HeartbeatReport,
    JournalEntry,
    LeaseRef,
    Run,
    RunSpec,
    RunStatus,
)
from corral.store.queries import to_dialect
from corral.store.sql_base import (
    Deltas,
    Entry,
    LeaseTimes,
    SqlBase,
    count_delivery,
    count_ended,
    delta,
    dumps,
    loads,
    merge,
    run_from_row,
    run_params,
)
from corral.store.transaction import Params, Row, Transaction

T = TypeVar("T")


class QueueMixin(SqlBase):
    # -- submission ---------------------------------------------------------------------------

    async def submit(self, specs: Sequence[RunSpec]) -> list[str]:
        """Insert runs (with their first journal entry) in one transaction. A spec whose
        idempotency key the tenant already used returns that run's id and inserts nothing."""
        now = self.clock()
        params = self._run_params(specs, now)

        # one run without an idempotency key: one round trip (PostgreSQL). No row back means
        # a tenant seen for the first time, or one at its quota: the general path below
        one = len(specs) == 1 and specs[0].idempotency_key is None and "submit_one" in self.q
        if one:
            rows = await self._hot_statement(
                "submit_one",
                {
                    **params[0],
                    "min_cost": MIN_RUN_COST,
                    "offer_lifetime": self.config.offer_lifetime,
                },
            )
            if rows:
                if not rows[0][2]:  # handed to a worker: nobody else has work to look for
                    self._signal_local_work()
                return [params[0]["id"]]

        async def body(tx: Transaction) -> tuple[list[str], bool]:
            await self._skip_planning(tx)
            return await self._insert_runs(tx, params, now)

        ids, wake = await self._tx(body)
        if wake:  # this process's waiting workers, and on SQLite the other processes'
            self._signal_local_work()
        return ids

    def _run_params(self, specs: Sequence[RunSpec], now: float) -> list[dict[str, Any]]:
        """The insert_run parameters of top-level runs, each with a new id."""
        aging = self.config.priority_aging
        return [run_params(spec, now, aging, tenant=spec.tenant) for spec in specs]

    async def _insert_runs(
        self, tx: Transaction, params: list[dict[str, Any]], now: float
    ) -> tuple[list[str], bool]:
        """Insert runs and their first journal entries in ``tx``, counting them against
        their tenants' quotas: their ids (an existing run's for a used idempotency key), and
        whether to wake the waiting workers (they are notified in ``tx``)."""
        inserted = await tx.fetch_each(self.q["insert_run"], params)
        ids: list[str] = []
        new_per_tenant: Counter[str] = Counter()
        journal: list[Params] = []
        for p, rows in zip(params, inserted, strict=True):
            if rows:
                ids.append(p["id"])
                new_per_tenant[p["tenant"]] += 1
                journal.append(
                    {
                        "run_id": p["id"],
                        "seq": 1,
                        "kind": "submitted",
                        "name": p["agent"],
                        "data": None,
                        "epoch": 0,
                        "now": now,
                    }
                )
            else:
                row = await tx.fetchone(self.q["find_by_idempotency_key"], p)
                assert row is not None
                ids.append(row[0])
        leasable = False
        for tenant in sorted(new_per_tenant):
            leasable |= await self._reserve_queued(tx, tenant, new_per_tenant[tenant])
        wake = False
        if journal:
            await tx.execute_many(self.q["insert_journal"], journal)
            # as submit_one: wake the waiting workers only when a lease could take a run
            # now (a tenant at its cap, or runs due later, would wake them all for nothing)
            wake = leasable and any(p["available_at"] <= now for p in params)
            if wake:
                await tx.execute(self.q["notify_work"])
        return ids, wake

    async def _reserve_queued(self, tx: Transaction, tenant: str, n: int) -> bool:
        args = {"tenant": tenant, "n": n}
        row = await tx.fetchone(self.q["reserve_queued"], args)
        if row is None:  # a new tenant, or one past its quota
            await self._ensure_tenant(tx, tenant)
            row = await tx.fetchone(self.q["reserve_queued"], args)
        if row is not None:
            return bool(row[1])
        raise BackpressureError(
            f"tenant {tenant!r} has reached its limit of queued runs", tenant=tenant
        )

    # -- fenced writes ------------------------------------------------------------------------

    async def heartbeat_many(self, refs: Sequence[LeaseRef], ttl: float) -> HeartbeatReport:
        if not refs:
            return HeartbeatReport()
        now = self.clock()

        async def body(tx: Transaction) -> list[list[Row]]:
            return await tx.fetch_each(
                self.q["heartbeat_run"],
                [
                    {"id": r.run_id, "epoch": r.epoch, "expires_at": now + ttl, "now": now}
                    for r in refs
                ],
            )

        results = await self._tx(body)
        lost = frozenset(r.run_id for r, rows in zip(refs, results, strict=True) if not rows)
        cancel = frozenset(rows[0][0] for rows in results if rows and rows[0][1])
        return HeartbeatReport(lost=lost, cancel_requested=cancel)

    async def heartbeat(self, ref: LeaseRef, ttl: float) -> bool:
        """Extend one lease; True when cancellation was requested. Stale epoch: LeaseLost."""
        report = await self.heartbeat_many([ref], ttl)
        if ref.run_id in report.lost:
            raise LeaseLost(ref.run_id, ref.epoch)
        return ref.run_id in report.cancel_requested

    async def ack_many(self, acks: Sequence[Ack]) -> frozenset[str]:
        """Mark runs succeeded; returns the ids whose lease was lost (those writes refused)."""
        if not acks:
            return frozenset()
        now = self.clock()
        if "ack_fast" in self.q:
            acked = await self._ack_fast(acks, now)
            rest = [a for a in acks if a.run_id not in acked]
            if not rest:
                return frozenset()
            # runs with a parent to wake, or whose lease was lost: the general path decides
            return await self._ack_batch(rest, now)
        return await self._finish_many(
            self.q["ack_run"], ack_params(acks, now), [a.run_id for a in acks], RunStatus.SUCCEEDED
        )

    async def _ack_fast(self, acks: Sequence[Ack], now: float) -> frozenset[str]:
        """Ack the runs without a parent in one round trip (PostgreSQL); their ids."""
        rows = await self._hot_statement("ack_fast", ack_arrays(acks, now))
        if rows:
            self._signal_local_work()
        return frozenset(r[0] for r in rows)

    async def _ack_batch(self, acks: Sequence[Ack], now: float) -> frozenset[str]:
        """``ack_many`` as one statement over arrays, then the counters (PostgreSQL)."""
        args = ack_arrays(acks, now)

        async def body(tx: Transaction) -> frozenset[str]:
            await self._skip_planning(tx)
            rows = await tx.fetchall(self.q["ack_runs_batch"], args)
            return await self._settle_finished(
                tx, [(r[0], r[1], r[2], r[3]) for r in rows], RunStatus.SUCCEEDED
            )

        acked = await self._tx(body)
        self._signal_local_work()
        return frozenset(a.run_id for a in acks) - acked

    async def ack(self, ref: LeaseRef, result: JSON = None) -> None:
        if await self.ack_many([Ack(ref.run_id, ref.epoch, result)]):
            raise LeaseLost(ref.run_id, ref.epoch)

    async def finish_cancelled(self, ref: LeaseRef) -> None:
        params = [{"id": ref.run_id, "epoch": ref.epoch, "now": self.clock()}]
        if await self._finish_many(
            self.q["finish_cancelled"], params, [ref.run_id], RunStatus.CANCELLED
        ):
            raise LeaseLost(ref.run_id, ref.epoch)

    async def _finish_many(
        self, query: str, params: Sequence[Params], run_ids: Sequence[str], status: RunStatus
    ) -> frozenset[str]:
        """Run ``query`` (a fenced write that ends a run with ``status``) for each run, then
        settle the counters; returns the ids whose lease was lost."""

        lost = await self._tx(
            functools.partial(
                self._finish_in_tx, query=query, params=params, run_ids=run_ids, status=status
            )
        )
        self._signal_local_work()
        return lost

    async def _finish_in_tx(
        self,
        tx: Transaction,
        *,
        query: str,
        params: Sequence[Params],
        run_ids: Sequence[str],
        status: RunStatus,
    ) -> frozenset[str]:
        """The body of ``_finish_many``, in the caller's transaction: the ids refused."""
        results = await tx.fetch_each(query, params)
        finished = [
            (run_id, *rows[0]) for run_id, rows in zip(run_ids, results, strict=True) if rows
        ]
        return frozenset(run_ids) - await self._settle_finished(tx, finished, status)

    async def _settle_finished(
        self,
        tx: Transaction,
        finished: Sequence[tuple[str, str, str | None, float | None]],
        status: RunStatus,
    ) -> frozenset[str]:
        """Count down the tenants (and wake the parents) of runs that just ended with
        ``status``, given as (run id, tenant, parent id, leased at); returns their ids."""
        now = self.clock()
        deltas: Deltas = {}
        held = LeaseTimes()
        for _, tenant, _, leased_at in finished:
            delta(deltas, tenant)[1] -= 1
            count_ended(deltas, tenant, status)
            held.add(tenant, leased_at, now)
        ended = [(run_id, parent) for run_id, _, parent, _ in finished]
        merge(deltas, await self._wake_parents(tx, ended, now))
        await self._adjust_tenants(tx, deltas, held)
        return frozenset(run_id for run_id, *_ in finished)

    async def fail(
        self, ref: LeaseRef, error: JSON, *, retryable: bool, retry_at: float | None = None
    ) -> RunStatus:
        """Record a failed attempt (journaled as ``attempt_failed``): queued again at
        ``retry_at`` while attempts remain and the error is retryable, else dead-lettered
        (``failed``, error kept)."""
        now = self.clock()
        args = {
            "id": ref.run_id,
            "epoch": ref.epoch,
            "error": dumps(error),
            "retryable": 1 if retryable else 0,
            "retry_at": max(now, retry_at or now),
            "aging": self.config.priority_aging,
            "now": now,
        }

        async def body(tx: Transaction) -> RunStatus:
            row = await tx.fetchone(self.q["fail_run"], args)
            if row is None:
                raise LeaseLost(ref.run_id, ref.epoch)
            status = RunStatus(row[1])
            # The run's error is the one that ended it (a later success clears it), so each
            # failed attempt's error is kept in the journal (bookkeeping: not replayed).
            await tx.execute(
                self.q["insert_journal"],
                {
                    "run_id": ref.run_id,
                    "seq": row[4],
                    "kind": "attempt_failed",
                    "name": None,
                    "data": dumps({"attempt": row[5], "error": error}),
                    "epoch": ref.epoch,
                    "now": now,
                },
            )
            deltas: Deltas = {}
            d = delta(deltas, row[0])
            d[0] += 1 if status == RunStatus.QUEUED else 0
            d[1] -= 1
            count_ended(deltas, row[0], status)
            held = LeaseTimes()
            held.add(row[0], row[3], now)
            if status.terminal:
                merge(deltas, await self._wake_parents(tx, [(ref.run_id, row[2])], now))
            await self._adjust_tenants(tx, deltas, held)
            return status

        status = await self._tx(body)
        self._signal_local_work()
        return status

    async def release_many(
        self, refs: Sequence[LeaseRef], *, unstarted: bool = False
    ) -> frozenset[str]:
        """Give runs back without counting an attempt (a draining worker); a run whose
        cancellation was requested ends ``cancelled`` instead. ``unstarted``: their agents
        were never called, so a run these leases started is held to its start_within again."""
        if not refs:
            return frozenset()
        now = self.clock()
        flag = int(unstarted)

        async def body(tx: Transaction) -> frozenset[str]:
            results = await tx.fetch_each(
                self.q["release_run"],
                [{"id": r.run_id, "epoch": r.epoch, "now": now, "unstarted": flag} for r in refs],
            )
            deltas: Deltas = {}
            ended = []
            for ref, rows in zip(refs, results, strict=True):
                if rows:
                    tenant, status, parent, attempts = rows[0]
                    d = delta(deltas, tenant)
                    d[1] -= 1
                    # attempts is what is left after the release gave one back
                    count_delivery(deltas, tenant, int(attempts) + 1, given_back=True)
                    if status == RunStatus.QUEUED:
                        d[0] += 1
                    else:
                        count_ended(deltas, tenant, status)
                        ended.append((ref.run_id, parent))
            merge(deltas, await self._wake_parents(tx, ended, now))
            await self._adjust_tenants(tx, deltas)
            await tx.execute(self.q["notify_work"])
            return frozenset(r.run_id for r, rows in zip(refs, results, strict=True) if not rows)

        lost = await self._tx(body)
        self._signal_local_work()
        return lost

    async def leased_to(self, worker_id: str) -> list[LeaseRef]:
        rows = await self._read(lambda tx: tx.fetchall(self.q["leased_to"], {"owner": worker_id}))
        return [LeaseRef(str(run_id), int(epoch)) for run_id, epoch in rows]

    async def release(self, ref: LeaseRef, *, unstarted: bool = False) -> None:
        if await self.release_many([ref], unstarted=unstarted):
            raise LeaseLost(ref.run_id, ref.epoch)

    # -- cancellation -------------------------------------------------------------------------

    async def cancel(self, run_id: str) -> Run:
        """Cancel a run and its descendants. Queued and waiting runs end ``cancelled`` now; a
        running run is flagged and ends ``cancelled`` when its worker sees the flag (next
        heartbeat or step) or, if the worker died, when its lease expires."""
        now = self.clock()

        async def body(tx: Transaction) -> None:
            if not await tx.fetch_dicts(self.q["get_run"], {"id": run_id}):
                raise RunNotFound(run_id)
            deltas = await self._cancel_one(tx, run_id, now)
            # One level at a time, each run locked before its children are read: a spawn
            # holds its parent's lock until it commits, so children it adds while the cancel
            # waits are read after it, and a spawn that starts later finds the parent flagged.
            # An ended run spawns no more: its children are read without a lock.
            level = [run_id]
            while level:
                rows = sorted(await tx.fetchall(self.q["children_of"], {"ids": json.dumps(level)}))
                for child_id, status, _, _ in rows:
                    if status not in TERMINAL:
                        merge(deltas, await self._cancel_one(tx, child_id, now))
                level = [str(r[0]) for r in rows if r[1] not in TERMINAL or int(r[3]) > 0]
            await self._adjust_tenants(tx, deltas)

        await self._tx(body)
        run = await self.get(run_id)
        assert run is not None
        return run

    async def retry(self, run_id: str, *, attempts: int | None = None) -> Run:
        """Queue a dead-lettered root run again, with ``attempts`` more attempts (default: as
        many as it was submitted with). Its journal stays: the next delivery replays what
        succeeded, and a failure the journal recorded (a step that gave up, a child that
        failed) comes back as it was. Within the tenant's quota (else BackpressureError, and
        the run stays failed); RunNotRetryable for any other run."""
        now = self.clock()
        args = {"id": run_id, "more": attempts, "now": now, "aging": self.config.priority_aging}

        async def body(tx: Transaction) -> bool:
            row = await tx.fetchone(self.q["retry_run"], args)
            if row is None:
                found = await tx.fetch_dicts(self.q["get_run"], {"id": run_id})
                if not found:
                    raise RunNotFound(run_id)
                run = found[0]
                if run["status"] != RunStatus.FAILED.value:
                    raise RunNotRetryable(run_id, f"it is {run['status']}, not failed")
                raise RunNotRetryable(run_id, f"it is a child run: retry its root {run['root_id']}")
            tenant, seq, epoch = row
            await tx.execute(
                self.q["insert_journal"],
                {
                    "run_id": run_id,
                    "seq": seq,
                    "kind": "retried",
                    "name": None,
                    "data": dumps({"attempts": attempts}),
                    "epoch": epoch,
                    "now": now,
                },
            )
            leasable = await self._reserve_queued(tx, tenant, 1)
            if leasable:
                await tx.execute(self.q["notify_work"])
            return leasable

        if await self._tx(body):
            self._signal_local_work()
        run = await self.get(run_id)
        assert run is not None
        return run

    async def _cancel_one(self, tx: Transaction, run_id: str, now: float) -> Deltas:
        # Lock first: each statement after the lock sees the row's latest status, so a
        # concurrent suspend (running -> waiting) cannot slip between the checks below.
        await tx.fetchone(self.q["lock_run"], {"id": run_id})
        for status in (RunStatus.QUEUED, RunStatus.WAITING):
            row = await tx.fetchone(
                self.q["cancel_idle"], {"id": run_id, "status": status.value, "now": now}
            )
            if row is not None:
                deltas: Deltas = {}
                delta(deltas, row[0])[0] -= 1 if status == RunStatus.QUEUED else 0
                count_ended(deltas, row[0], RunStatus.CANCELLED)
                if status == RunStatus.WAITING:
                    await tx.execute(self.q["drop_waits"], {"parent_id": run_id})
                return merge(deltas, await self._wake_parents(tx, [(run_id, row[1])], now))
        await tx.execute(self.q["request_cancel"], {"id": run_id})
        return {}

    # -- journal ------------------------------------------------------------------------------

    async def append(self, ref: LeaseRef, entries: Sequence[Entry]) -> Appended:
        """Append journal entries, fenced by the lease epoch."""
        now = self.clock()

        async def body(tx: Transaction) -> Appended:
            return await self._append_in_tx(tx, ref, entries, now)

        return await self._tx(body, relaxed=not self.config.durable_steps)

    async def journal(
        self, run_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[JournalEntry]:
        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(
                self.q["read_journal"], {"id": run_id, "after": after, "limit": limit}
            )

        return [
            JournalEntry(r[0], int(r[1]), r[2], r[3], loads(r[4]), int(r[5]), r[6])
            for r in await self._read(body)
        ]

    # -- reading ------------------------------------------------------------------------------

    async def get(self, run_id: str) -> Run | None:
        async def body(tx: Transaction) -> list[dict[str, Any]]:
            return await tx.fetch_dicts(self.q["get_run"], {"id": run_id})

        rows = await self._read(body)
        return run_from_row(rows[0]) if rows else None

    async def list_runs(
        self,
        *,
        tenant: str | None = None,
        status: RunStatus | str | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]:
        """Newest first; pass the last id as ``before`` for the next page."""
        given = {
            "tenant": tenant,
            "status": None if status is None else str(status),
            "agent": agent,
            "before": before,
        }
        args: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        query = _list_runs_sql(self.q["list_runs"], self.dialect, tuple(args))
        args["limit"] = limit

        async def body(tx: Transaction) -> list[dict[str, Any]]:
            return await tx.fetch_dicts(query, args)

        return [run_from_row(r) for r in await self._read(body)]


_LIST_FILTERS = {
    "tenant": "tenant = :tenant",
    "status": "status = :status",
    "agent": "agent = :agent",
    "before": "id < :before",
}


@functools.lru_cache(maxsize=64)
def _list_runs_sql(template: str, dialect: str, filters: tuple[str, ...]) -> str:
    """list_runs with the conditions of ``filters`` only (one text per combination)."""
    conditions = " AND ".join(_LIST_FILTERS[f] for f in filters) or "1 = 1"
    return template.replace("{filters}", to_dialect(conditions, dialect))


def ack_params(acks: Sequence[Ack], now: float) -> list[Params]:
    """The parameters of ``ack_run``, one set per ack."""
    return [{"id": a.run_id, "epoch": a.epoch, "result": dumps(a.result), "now": now} for a in acks]


def ack_arrays(acks: Sequence[Ack], now: float) -> Params:
    """The array parameters of the PostgreSQL batch acks (``ack_fast``, ``ack_runs_batch``)."""
    return {
        "ids": [a.run_id for a in acks],
        "epochs": [a.epoch for a in acks],
        "results": [dumps(a.result) for a in acks],
        "now": now,
    }
