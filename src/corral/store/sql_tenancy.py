"""Load signal and tenancy verbs: queue statistics, plans, tenant overrides, the global cap."""

from __future__ import annotations

from typing import TypeVar

from corral.config import PlanSpec
from corral.errors import InvalidInput
from corral.models import (
    QueueStats,
    RunStatus,
    TenantStats,
)
from corral.store.sql_base import SqlBase, _limit, _unlimited_to_none
from corral.store.transaction import Row, Transaction

T = TypeVar("T")


class TenancyMixin(SqlBase):
    # -- load signal --------------------------------------------------------------------------

    async def stats(self) -> QueueStats:
        now = self.clock()

        async def body(tx: Transaction) -> tuple[list[Row], Row | None, Row | None]:
            tenants = await tx.fetchall(self.q["tenant_stats"], {"now": now})
            waiting = await tx.fetchone(self.q["count_waiting"])
            cap = await tx.fetchone(self.q["read_global_cap"])
            return tenants, waiting, cap

        tenant_rows, waiting_row, cap = await self._read(body)
        tenants = tuple(
            TenantStats(
                tenant=r[0],
                plan=r[1],
                queued=int(r[2]),
                in_flight=int(r[3]),
                cap=_unlimited_to_none(int(r[4])),
                weight=float(r[5]),
                oldest_queued_age=max(0.0, now - r[9]) if r[9] is not None else 0.0,
                queued_later=int(r[10]),
                succeeded=int(r[6]),
                failed=int(r[7]),
                cancelled=int(r[8]),
            )
            for r in tenant_rows
        )
        # every count from the tenants' counters and one index: O(tenants), not O(table)
        waiting = int(waiting_row[0]) if waiting_row else 0
        counts = {
            RunStatus.QUEUED: sum(t.queued for t in tenants),
            RunStatus.RUNNING: sum(t.in_flight for t in tenants),
            RunStatus.WAITING: waiting,
            RunStatus.SUCCEEDED: sum(t.succeeded for t in tenants),
            RunStatus.FAILED: sum(t.failed for t in tenants),
            RunStatus.CANCELLED: sum(t.cancelled for t in tenants),
        }
        by_status = {status.value: n for status, n in counts.items() if n}
        return QueueStats(
            tenants=tenants,
            queued=counts[RunStatus.QUEUED],
            in_flight=counts[RunStatus.RUNNING],
            waiting=waiting,
            oldest_queued_age=max((t.oldest_queued_age for t in tenants), default=0.0),
            global_cap=None if cap is None or cap[0] is None else int(cap[0]),
            by_status=by_status,
        )

    # -- tenancy ------------------------------------------------------------------------------

    async def set_plan(self, plan: PlanSpec) -> None:
        async def body(tx: Transaction) -> None:
            await tx.execute(
                self.q["upsert_plan"],
                {
                    "name": plan.name,
                    "cap": _limit(plan.cap),
                    "weight": plan.weight,
                    "max_queued": _limit(plan.max_queued),
                },
            )
            await tx.execute(self.q["refresh_tenant_limits"], {"plan": plan.name, "tenant": None})
            await tx.execute(self.q["notify_work"])

        await self._tx(body)
        self._signal_local_work()

    async def plans(self) -> list[PlanSpec]:
        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["list_plans"])

        return [
            PlanSpec(
                r[0], _unlimited_to_none(int(r[1])), float(r[2]), _unlimited_to_none(int(r[3]))
            )
            for r in await self._read(body)
        ]

    async def set_tenant(
        self,
        tenant: str,
        *,
        plan: str | None = None,
        cap: int | None = None,
        weight: float | None = None,
        max_queued: int | None = None,
    ) -> None:
        """Assign a plan and/or per-tenant overrides; arguments left None keep their value."""

        async def body(tx: Transaction) -> None:
            current = await tx.fetch_dicts(self.q["get_tenant"], {"tenant": tenant})
            old = current[0] if current else {}
            new_plan = plan or old.get("plan") or self.config.default_plan
            if await tx.fetchone(self.q["plan_exists"], {"name": new_plan}) is None:
                raise InvalidInput(f"no plan named {new_plan!r}")
            await tx.execute(
                self.q["set_tenant"],
                {
                    "tenant": tenant,
                    "plan": new_plan,
                    "cap_override": cap if cap is not None else old.get("cap_override"),
                    "weight_override": weight if weight is not None else old.get("weight_override"),
                    "max_queued_override": (
                        max_queued if max_queued is not None else old.get("max_queued_override")
                    ),
                },
            )
            await tx.execute(self.q["refresh_tenant_limits"], {"plan": None, "tenant": tenant})
            await tx.execute(self.q["notify_work"])

        await self._tx(body)
        self._signal_local_work()

    async def set_global_cap(self, cap: int | None) -> None:
        self._global_cap_unset_at = None

        async def body(tx: Transaction) -> None:
            await tx.execute(self.q["set_global_cap"], {"value": cap})
            await tx.execute(self.q["notify_work"])

        await self._tx(body)
        self._signal_local_work()
