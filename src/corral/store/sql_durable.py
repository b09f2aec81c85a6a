"""Durable-execution verbs: spawning children, suspending on children or a timer, waking
parents, and charging budgets up a run tree.

Invariants kept here, inside single transactions:
* fan-out: a run never gets more than ``max_children`` children, nor a child deeper than
  ``max_depth`` (tenant overrides win over the app's defaults);
* budgets: a charge is applied to the run and every ancestor with ``spent + amount <= budget``
  checked row by row under the row lock, so concurrent charges from many workers never overspend
  the root (or any sub-limit on the way);
* waiting: a suspended run holds no lease and no tenant slot. A child ending locks its parent
  before it looks for the parent's wait rows, so it either sees the wait (and counts it down)
  or the parent's suspend saw the child already ended — never neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from corral.errors import (
    BudgetExceeded,
    FanoutLimitError,
    InvalidInput,
    LeaseLost,
    RunCancelled,
    RunNotFound,
)
from corral.models import JSON, LeaseRef, RunOutcome, RunSpec, RunStatus
from corral.store.sql_base import (
    Deltas,
    Entry,
    SqlBase,
    count_delivery,
    delta,
    dumps,
    loads,
    run_params,
)
from corral.store.transaction import Row, Transaction
from corral.store.user_sql import StepTransaction


class DurableMixin(SqlBase):
    async def _lock_running(self, tx: Transaction, ref: LeaseRef, now: float) -> Row:
        row = await tx.fetchone(
            self.q["lock_running"], {"id": ref.run_id, "epoch": ref.epoch, "now": now}
        )
        if row is None:
            raise LeaseLost(ref.run_id, ref.epoch)
        return row

    async def spawn(
        self,
        ref: LeaseRef,
        specs: Sequence[RunSpec],
        *,
        max_children: int,
        max_depth: int,
        entry: Entry,
    ) -> list[str]:
        """Create child runs of the running run ``ref`` and journal ``entry`` (its data gets the
        child ids under ``"children"``), all or nothing."""
        now = self.clock()

        async def body(tx: Transaction) -> list[str]:
            tenant, root_id, depth, children, cancel, _p, _b, _s = await self._lock_running(
                tx, ref, now
            )
            if cancel:
                raise RunCancelled(ref.run_id)
            limits = await tx.fetchone(self.q["tenant_fanout"], {"tenant": tenant})
            cap_children = limits[0] if limits and limits[0] is not None else max_children
            cap_depth = limits[1] if limits and limits[1] is not None else max_depth
            if children + len(specs) > cap_children:
                raise FanoutLimitError(
                    f"run {ref.run_id} may have at most {cap_children} children "
                    f"(has {children}, asked for {len(specs)} more)"
                )
            if depth + 1 > cap_depth:
                raise FanoutLimitError(
                    f"run {ref.run_id} is at depth {depth}; children may not go deeper than "
                    f"{cap_depth}"
                )
            remaining = await self._remaining(tx, ref.run_id)
            params = []
            for spec in specs:
                if spec.budget is not None and remaining is not None and spec.budget > remaining:
                    raise BudgetExceeded(
                        f"a child budget of {spec.budget:g} exceeds the {remaining:g} left",
                        requested=spec.budget,
                        remaining=remaining,
                    )
                params.append(
                    run_params(
                        # a child starts now, and has no idempotency key of its own
                        replace(spec, not_before=None, idempotency_key=None),
                        now,
                        self.config.priority_aging,
                        tenant=tenant,
                        parent=(ref.run_id, root_id, depth + 1),
                    )
                )
            await tx.fetch_each(self.q["insert_run"], params)
            await tx.execute(self.q["add_children"], {"id": ref.run_id, "n": len(specs)})
            leasable = await self._reserve_queued(tx, tenant, len(specs))
            await tx.execute_many(
                self.q["insert_journal"],
                [
                    {
                        "run_id": p["id"],
                        "seq": 1,
                        "kind": "submitted",
                        "name": p["agent"],
                        "data": dumps({"parent_id": ref.run_id}),
                        "epoch": 0,
                        "now": now,
                    }
                    for p in params
                ],
            )
            ids = [p["id"] for p in params]
            kind, name, data = entry
            await self._append_in_tx(
                tx, ref, [(kind, name, {**(data or {}), "children": ids})], now
            )
            if leasable:
                # at its cap (the parent itself may hold the last slot), the children wait for
                # a slot to free: the parent's suspend or end wakes the workers then
                await tx.execute(self.q["notify_work"])
            return ids

        ids = await self._tx(body)
        self._signal_local_work()
        return ids

    async def _remaining(self, tx: Transaction, run_id: str) -> float | None:
        """The least budget left on the run or any ancestor (None: no budget anywhere)."""
        chain = await tx.fetchall(self.q["budget_chain"], {"id": run_id})
        left = None
        for (ancestor,) in chain:
            row = await tx.fetchone(self.q["remaining_budget"], {"id": ancestor})
            if row is not None:
                left = row[0] if left is None else min(left, row[0])
        return None if left is None else max(0.0, float(left))

    async def charge(self, ref: LeaseRef, amount: float, entry: Entry | None) -> float | None:
        """Draw ``amount`` from the run and every ancestor's budget, journaling ``entry`` (if
        any).
        Returns the root's remaining budget (None when it has none)."""
        now = self.clock()

        async def body(tx: Transaction) -> float | None:
            await self._lock_running(tx, ref, now)
            remaining = await self._remaining(tx, ref.run_id)
            chain = await tx.fetchall(self.q["budget_chain"], {"id": ref.run_id})
            root_left: float | None = None
            for index, (run_id,) in enumerate(chain):
                row = await tx.fetchone(self.q["charge_run"], {"id": run_id, "amount": amount})
                if row is None:
                    raise BudgetExceeded(
                        f"charging {amount:g} would exceed the budget ({remaining or 0:g} left)",
                        requested=amount,
                        remaining=remaining or 0.0,
                    )
                if index == 0 and row[0] is not None:
                    root_left = max(0.0, float(row[0]) - float(row[1]))
            if entry is not None:
                kind, name, data = entry
                recorded = {**(data or {}), "remaining": root_left}
                await self._append_in_tx(tx, ref, [(kind, name, recorded)], now)
            return root_left

        return await self._tx(body)

    async def suspend(
        self,
        ref: LeaseRef,
        *,
        children: Sequence[str] = (),
        wake_at: float | None = None,
        entry: Entry,
    ) -> bool:
        """Give the lease and the tenant slot back until every run in ``children`` has ended or
        ``wake_at`` has come. False (and nothing written) when there is nothing to wait for."""
        now = self.clock()

        async def body(tx: Transaction) -> bool:
            locked = await self._lock_running(tx, ref, now)
            tenant = locked[0]
            if locked[4]:
                raise RunCancelled(ref.run_id)
            pending = []
            for child in dict.fromkeys(children):  # a run named twice is awaited once
                row = await tx.fetchone(self.q["run_outcome"], {"id": child})
                if row is not None and not RunStatus(row[1]).terminal:
                    pending.append(child)
            if children and not pending:
                return False
            if not children and (wake_at is None or wake_at <= now):
                return False
            await self._append_in_tx(tx, ref, [entry], now)
            await tx.execute_many(
                self.q["insert_wait"], [{"parent_id": ref.run_id, "child_id": c} for c in pending]
            )
            row = await tx.fetchone(
                self.q["suspend_run"],
                {
                    "id": ref.run_id,
                    "epoch": ref.epoch,
                    "now": now,
                    "awaiting": len(pending),
                    "wake_at": wake_at,
                },
            )
            if row is None:
                raise LeaseLost(ref.run_id, ref.epoch)
            deltas: Deltas = {}
            delta(deltas, tenant)[1] -= 1  # the run holds no slot while it waits
            # row[1]: the attempts left after the suspension gave one back, as a release does
            count_delivery(deltas, tenant, int(row[1]) + 1, given_back=True)
            await self._adjust_tenants(tx, deltas)
            return True

        suspended = await self._tx(body)
        if suspended:
            self._signal_local_work()
        return suspended

    async def transact(
        self,
        ref: LeaseRef,
        name: str,
        fn: Callable[[StepTransaction], Awaitable[JSON]],
        encode: Callable[[Any], JSON],
    ) -> tuple[JSON, bool]:
        """Run ``fn`` in one transaction with the journal entry of step ``name`` (fenced).
        Returns the encoded result and whether cancellation was requested."""
        now = self.clock()

        async def body(tx: Transaction) -> tuple[JSON, bool]:
            await self._lock_running(tx, ref, now)
            value = encode(await fn(StepTransaction(tx, self.dialect)))
            appended = await self._append_in_tx(tx, ref, [("step", name, {"ok": value})], now)
            return value, appended.cancel_requested

        return await self._tx(body, relaxed=not self.config.durable_steps)

    async def outcomes(
        self, run_ids: Sequence[str], *, parent: str | None = None
    ) -> list[RunOutcome]:
        async def body(tx: Transaction) -> list[list[Row]]:
            return await tx.fetch_each(self.q["run_outcome"], [{"id": i} for i in run_ids])

        found = await self._read(body)
        out = []
        for run_id, rows in zip(run_ids, found, strict=True):
            if not rows:
                raise RunNotFound(run_id)
            _, status, result, error, parent_id = rows[0]
            if parent is not None and parent_id != parent:
                # only a run's own children wake it when they end; and another tree's
                # run may be another tenant's
                raise InvalidInput(
                    f"run {run_id} is not a child of run {parent}: a run waits only for the "
                    "runs it spawned"
                )
            out.append(RunOutcome(run_id, RunStatus(status), loads(result), loads(error)))
        return out

    async def set_tenant_fanout(
        self, tenant: str, *, max_children: int | None, max_depth: int | None
    ) -> None:
        async def body(tx: Transaction) -> None:
            # not through _reserve_queued, which refuses a tenant whose queue is past its
            # quota (lowered since): a limit is no submit
            await self._ensure_tenant(tx, tenant)
            await tx.execute(
                self.q["set_tenant_fanout"],
                {
                    "tenant": tenant,
                    "max_children": max_children,
                    "max_depth": max_depth,
                },
            )

        await self._tx(body)

    # -- wake-ups, called from the queue verbs ------------------------------------------------

    async def _wake_parents(
        self, tx: Transaction, ended: Sequence[tuple[str, str | None]], now: float
    ) -> Deltas:
        """Count down the parents waiting on runs that just ended; queue those with nothing
        left to wait for. Returns the tenant counter deltas to apply."""
        deltas: Deltas = {}
        for child_id, parent_id in ended:
            if parent_id is None:
                continue
            await tx.fetchone(self.q["lock_run"], {"id": parent_id})
            waits = await tx.fetchall(self.q["take_waits"], {"child_id": child_id})
            for (waiting_parent,) in waits:
                row = await tx.fetchone(self.q["count_down_awaiting"], {"id": waiting_parent})
                if row is not None and row[0] == 0:
                    await self._wake(tx, waiting_parent, now, deltas)
        return deltas

    async def _wake(self, tx: Transaction, run_id: str, now: float, deltas: Deltas) -> None:
        row = await tx.fetchone(self.q["wake_run"], {"id": run_id, "now": now})
        if row is not None:
            delta(deltas, row[0])[0] += 1

    async def _wake_timers(self, tx: Transaction, now: float) -> Deltas:
        deltas: Deltas = {}
        due = await tx.fetchall(self.q["due_timers"], {"now": now, "limit": self.config.reap_batch})
        for (run_id,) in due:
            await self._wake(tx, run_id, now, deltas)
        return deltas
