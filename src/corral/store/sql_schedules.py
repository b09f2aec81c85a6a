"""Recurring schedules in the store: which caller submits a tick's run, and the schedules
tenants create at run time.

A schedule's row holds its latest tick. The one caller that moves it forward to a tick
submits that tick's run in the same transaction, so a tick gets one run however many workers
offer it. A schedule declared in code gets its row the first time a worker offers a tick; one
created at run time (``create_schedule``) gets it at creation, with its definition, and the
row's deletion ends it: a worker claims a stored schedule's tick only while the row still
holds the definition it read.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from corral.dispatch.schedule import Schedule, ScheduledTick, TickResult, decode_definition
from corral.errors import BackpressureError, InvalidInput, ScheduleExists, ScheduleLimitReached
from corral.models import RunSpec
from corral.store.sql_queue import QueueMixin
from corral.store.transaction import Row, Transaction

log = logging.getLogger(__name__)


class SchedulesMixin(QueueMixin):
    async def submit_scheduled(
        self,
        name: str,
        tick: float,
        spec: RunSpec,
        *,
        run: bool = True,
        definition: str | None = None,
    ) -> str | None:
        """The run of schedule ``name`` for ``tick``, submitted by the one caller that moves
        the schedule's last tick forward to ``tick``, in the same transaction (so a tick gets
        one run however many workers see it due, and none if the submit fails, over the
        tenant's quota say: a later call may then try again). None for every other caller,
        for a tick not after the last, for the tick a schedule is first seen at (its runs
        begin with the tick after it), and without ``run`` (a tick too late to make up for:
        the schedule moves past it without a run). ``definition``: the schedule was created
        at run time and stored as that text; no run unless its row still holds it (its
        row then keeps its tick after ``tick``, for ``due_schedules``)."""
        after = None
        if definition is not None:
            after = decode_definition(name, spec.tenant, definition).next_tick(tick)
        offer = _Offer(name, tick, spec, run, definition, after)
        (result,) = await self._offer_ticks([offer])
        if result.error is not None:
            raise result.error
        return result.run_id

    async def submit_ticks(self, ticks: Sequence[ScheduledTick]) -> list[TickResult]:
        """``submit_scheduled`` for many ticks in one transaction (one write lock on SQLite,
        one commit), each with its own result: a tenant over its quota of queued runs keeps
        its ticks untaken (their results hold the error) and the others' runs stay. Ticks
        another caller has taken already are found before the transaction, without a lock."""
        offers = [
            _Offer(
                t.schedule.name,
                t.tick,
                t.schedule.run,
                t.submit,
                t.schedule.definition,
                None if t.schedule.definition is None else t.schedule.next_tick(t.tick),
            )
            for t in ticks
        ]
        return await self._offer_ticks(offers)

    async def _offer_ticks(self, offers: Sequence[_Offer]) -> list[TickResult]:
        results = [TickResult() for _ in offers]
        if not offers:
            return results
        names = json.dumps(sorted({o.name for o in offers}))

        async def marks(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["schedule_marks"], {"names": names})

        last = {str(r[0]): float(r[1]) for r in await self._read(marks)}
        # A schedule without a row is one in code seen for the first time: its row is made.
        # In (tenant, name) order, which every caller follows: two batches lock the same
        # schedules' rows, and their tenants' rows after them, in one order (no deadlock).
        pending = sorted(
            (i for i, o in enumerate(offers) if last.get(o.name, -math.inf) < o.tick),
            key=lambda i: (offers[i].spec.tenant, offers[i].name),
        )
        if not pending:
            return results
        now = self.clock()
        built = self._run_params([offers[i].spec for i in pending], now)
        params = dict(zip(pending, built, strict=True))

        async def body(tx: Transaction) -> tuple[dict[int, TickResult], bool]:
            taken: dict[int, TickResult] = {}
            wake = False
            for _, group in groupby(pending, key=lambda i: offers[i].spec.tenant):
                members = list(group)
                await tx.execute(self.q["tick_savepoint"])
                claimed = [i for i in members if await self._take_tick(tx, offers[i])]
                try:
                    if claimed:
                        runs = [params[i] for i in claimed]
                        ids, woke = await self._insert_runs(tx, runs, now)
                        wake |= woke
                        for i, run_id in zip(claimed, ids, strict=True):
                            taken[i] = TickResult(run_id)
                except BackpressureError as exc:
                    # the tenant's schedules stay at their last ticks, for a later offer
                    await tx.execute(self.q["tick_rollback"])
                    taken.update((i, TickResult(error=exc)) for i in members)
                await tx.execute(self.q["tick_release"])
            return taken, wake

        taken, wake = await self._tx(body)
        if wake:
            self._signal_local_work()
        for i, result in taken.items():
            results[i] = result
        return results

    async def _take_tick(self, tx: Transaction, offer: _Offer) -> bool:
        """Move ``offer``'s schedule to its tick in ``tx``: True when this caller did so
        for a run (which it must then submit)."""
        at = {"name": offer.name, "tick": offer.tick, "next": offer.next}
        if offer.definition is None:
            if await tx.fetchone(self.q["schedule_first_seen"], at):
                return False
            if not offer.submit:
                await tx.execute(self.q["skip_tick"], at)
                return False
            return await tx.fetchone(self.q["claim_tick"], at) is not None
        stored = {**at, "definition": offer.definition}
        if not offer.submit:
            await tx.execute(self.q["skip_stored_tick"], stored)
            return False
        return await tx.fetchone(self.q["claim_stored_tick"], stored) is not None

    async def schedule_ticks(
        self, tenant: str | None = None, *, code_only: bool = False
    ) -> dict[str, tuple[float, float | None]]:
        """Each schedule seen so far (of those created at run time, ``tenant``'s only if
        given, and none with ``code_only``): its last tick (the latest it has moved to), and
        the latest tick that got a run (None: none yet)."""
        args = {"tenant": tenant, "code_only": code_only}

        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["schedule_ticks"], args)

        return {
            r[0]: (float(r[1]), None if r[2] is None else float(r[2]))
            for r in await self._read(body)
        }

    async def create_schedule(self, schedule: Schedule) -> None:
        """Store ``schedule`` (its ``definition`` set, named by ``stored_name``); it starts
        at its latest tick, so its first run is at the tick after now. Raises
        ``ScheduleExists`` for a name in use and ``ScheduleLimitReached`` when its tenant
        has ``StoreConfig.max_schedules_per_tenant`` already (counted under the tenant's
        row lock: two creates at once cannot both take the last place)."""
        if schedule.definition is None:
            raise InvalidInput(f"schedule {schedule.name!r} has no stored definition")
        tenant = schedule.run.tenant
        limit = self.config.max_schedules_per_tenant
        now = self.clock()
        row = {
            "name": schedule.name,
            "tick": schedule.latest_tick(now),
            "next": schedule.next_tick(now),
            "tenant": tenant,
            "definition": schedule.definition,
            "now": now,
        }
        args = {"tenant": tenant, "plan": self.config.default_plan}

        async def body(tx: Transaction) -> None:
            await tx.execute(self.q["ensure_tenant"], args)
            # The schedule's row before the tenant's, the order of a worker's tick batch (its
            # claim, then its run's quota): a name in use waits here for a batch claiming it,
            # which took the tenant's row first deadlocked with it. The count then includes
            # this row, under the tenant's lock; a refusal rolls it back.
            if await tx.fetchone(self.q["insert_stored_schedule"], row) is None:
                raise ScheduleExists(schedule.name)
            await tx.fetchone(self.q["lock_tenant"], args)
            count = await tx.fetchone(self.q["count_stored_schedules"], args)
            if count is not None and int(count[0]) > limit:
                raise ScheduleLimitReached(tenant, limit)

        await self._tx(body)

    async def delete_schedule(self, name: str) -> bool:
        """Delete the stored schedule ``name`` (its full name); False when there is none.
        Schedules declared in code are not stored, and are not deleted here."""

        async def body(tx: Transaction) -> bool:
            return await tx.fetchone(self.q["delete_stored_schedule"], {"name": name}) is not None

        return await self._tx(body)

    async def stored_schedules(self, tenant: str | None = None) -> list[Schedule]:
        """The schedules created at run time (``tenant``'s only, if given), by name."""

        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["stored_schedules"], {"tenant": tenant})

        return [_decoded(r) for r in await self._read(body)]

    async def due_schedules(self, until: float) -> list[Schedule]:
        """The stored schedules that run (not paused) whose next tick is at or before
        ``until``, overdue ones included: what a worker's schedule loop needs until then,
        however many schedules are stored."""

        async def body(tx: Transaction) -> list[Row]:
            return await tx.fetchall(self.q["due_schedules"], {"until": until})

        return [s for r in await self._read(body) if (s := _readable(r)) is not None]

    async def stored_schedule_counts(self) -> tuple[int, int]:
        """How many stored schedules run, and how many are paused (for /metrics)."""

        async def body(tx: Transaction) -> Row | None:
            return await tx.fetchone(self.q["stored_schedule_counts"])

        row = await self._read(body)
        return (0, 0) if row is None else (int(row[0] or 0), int(row[1] or 0))

    async def pause_schedule(self, name: str) -> bool:
        """Pause the stored schedule ``name``: its ticks get no run until it is resumed (a
        worker that read it before is refused by the claim). False when there is none."""
        at = {"name": name, "now": self.clock()}

        async def body(tx: Transaction) -> bool:
            return await tx.fetchone(self.q["pause_stored_schedule"], at) is not None

        return await self._tx(body)

    async def resume_schedule(self, name: str) -> bool:
        """Resume the stored schedule ``name`` from its latest tick: the ticks it was paused
        through get no run. False when there is none."""

        async def body(tx: Transaction) -> bool:
            row = await tx.fetchone(self.q["stored_schedule"], {"name": name})
            if row is None:
                return False
            schedule = _decoded(row)
            now = self.clock()
            resume = {
                "name": name,
                "definition": schedule.definition,
                "tick": schedule.latest_tick(now),
                "next": schedule.next_tick(now),
            }
            return await tx.fetchone(self.q["resume_stored_schedule"], resume) is not None

        return await self._tx(body)


@dataclass(frozen=True, slots=True)
class _Offer:
    """A tick offered to the store, from either entry point."""

    name: str
    tick: float
    spec: RunSpec
    submit: bool
    definition: str | None
    #: a stored schedule's tick after this one (its row keeps it for due_schedules)
    next: float | None


def _decoded(row: Row) -> Schedule:
    """A stored schedule from its row: name, tenant, definition, paused_at."""
    paused_at = None if row[3] is None else float(row[3])
    return decode_definition(row[0], row[1], row[2], paused_at)


def _readable(row: Row) -> Schedule | None:
    """``_decoded``, or None (and a warning) for a row this process cannot read: one written
    on a machine whose tz database knows a zone this one's does not. Its ticks are left to
    the workers that can read it, rather than the one row failing every tenant's."""
    try:
        return _decoded(row)
    except InvalidInput as exc:
        log.warning("stored schedule %s cannot run here: %s", row[0], exc)
        return None
