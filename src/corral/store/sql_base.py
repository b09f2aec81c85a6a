"""Shared state of the SQL store mixins: configuration, clock, the dialect's named queries,
the transaction hooks a backend implements, and the JSON and row helpers.

Tenant counters (``queued``, ``in_flight`` on ``corral_tenants``) are moved in the same
transaction as the run rows they count; caps and quotas are checked against them, so they hold
with any number of workers. Tenant rows are always updated in sorted order (no lock cycles).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar

from corral.clock import Clock, system_clock
from corral.config import UNLIMITED, StoreConfig
from corral.errors import InvalidInput, LeaseLost
from corral.ids import new_run_id
from corral.models import (
    JSON,
    Appended,
    Lease,
    LeaseRef,
    Run,
    RunSpec,
    RunStatus,
)
from corral.store.queries import load_queries
from corral.store.transaction import Params, Row, Transaction

T = TypeVar("T")

#: how long (seconds) a process remembers grants it heard of but has no waiter for
GRANT_MEMORY = 60.0

#: per-tenant counter changes, applied at the end of a transaction: [queued, in_flight,
#: succeeded, failed, cancelled (runs that ended), redelivered, expiry_dead_letters]
Deltas = dict[str, list[int]]
_ENDED_AT = {RunStatus.SUCCEEDED: 2, RunStatus.FAILED: 3, RunStatus.CANCELLED: 4}
REDELIVERED = 5
EXPIRY_DEAD_LETTERS = 6
Entry = tuple[str, str | None, JSON]


_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODER = json.JSONDecoder()


def dumps(value: JSON) -> str:
    # None (an agent without a result, a run without input) is the common case on the hot
    # path: answered without the encoder's per-call set-up
    return "null" if value is None else _ENCODER.encode(value)


def loads(text: str | None) -> JSON:
    if text is None or text == "null":
        return None
    return _DECODER.decode(text)


def _limit(value: int | None) -> int:
    return UNLIMITED if value is None else value


def _unlimited_to_none(value: int) -> int | None:
    return None if value >= UNLIMITED else value


def run_params(
    spec: RunSpec,
    now: float,
    aging: float,
    *,
    tenant: str,
    parent: tuple[str, str, int] | None = None,
) -> dict[str, Any]:
    """insert_run's parameters for ``spec``, under a new id: a top-level run, or with
    ``parent`` (the parent's id, its root's id, the child's depth) a child run. ``aging``:
    ``StoreConfig.priority_aging``, which turns priority into the sort key."""
    run_id = new_run_id()
    available = max(now, spec.not_before) if spec.not_before is not None else now
    parent_id, root_id, depth = parent if parent is not None else (None, run_id, 0)
    return {
        "id": run_id,
        "tenant": tenant,
        "agent": spec.agent,
        "input": dumps(spec.input),
        "priority": spec.priority,
        "sort_key": available - spec.priority * aging,
        "available_at": available,
        "max_attempts": spec.max_attempts,
        "idempotency_key": spec.idempotency_key,
        "parent_id": parent_id,
        "root_id": root_id,
        "depth": depth,
        "budget": spec.budget,
        "timeout": spec.timeout,
        "start_by": None if spec.start_within is None else available + spec.start_within,
        "now": now,
    }


def run_from_row(row: dict[str, Any]) -> Run:
    return Run(
        id=row["id"],
        tenant=row["tenant"],
        agent=row["agent"],
        input=loads(row["input"]),
        status=RunStatus(row["status"]),
        priority=row["priority"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        result=loads(row["result"]),
        error=loads(row["error"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        available_at=row["available_at"],
        lease_epoch=row["lease_epoch"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        cancel_requested=bool(row["cancel_requested"]),
        idempotency_key=row["idempotency_key"],
        parent_id=row["parent_id"],
        root_id=row["root_id"],
        depth=row["depth"],
        budget=row["budget"],
        spent=row["spent"],
        timeout=row["timeout"],
        start_by=row["start_by"],
    )


class SqlBase(ABC):
    dialect: str
    #: True when a write transaction excludes every other writer from its start (SQLite's
    #: BEGIN IMMEDIATE): what it reads is then already as fresh as a row lock would make it
    writes_serialized: ClassVar[bool] = False
    #: whether submits hand runs straight to waiting workers (offer_slots)
    hands_off: ClassVar[bool] = False

    def __init__(self, config: StoreConfig | None = None, clock: Clock = system_clock) -> None:
        self.config = config or StoreConfig()
        self.clock = clock
        self.q = load_queries(self.dialect)
        self._local_work = asyncio.Event()
        #: express-slot waiters: (wake for work of tenants below this many in flight, future)
        self._light_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._generation = 0
        self._last_maintenance = float("-inf")
        self._last_undue_lift = float("-inf")
        #: maintenance started after a lease, off that lease's path (see sql_lease.py)
        self._maintenance: asyncio.Task[None] | None = None
        self._global_cap_unset_at: float | None = None
        #: request ids of shared resources granted, as learned by this process
        self.granted_requests: set[str] = set()
        self._grant_log: deque[tuple[float, str]] = deque()
        self._change_waiters: list[asyncio.Future[None]] = []

    # -- backend hooks ------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _tx(self, body: Callable[[Transaction], Awaitable[T]], *, relaxed: bool = False) -> T:
        """Run ``body`` in one write transaction (retried whole on transient conflicts).

        ``relaxed``: the commit may return before it is flushed to disk (PostgreSQL's
        ``synchronous_commit = off``). Used for journal appends only, unless
        ``config.durable_steps``: a later synchronous commit (ack, fail, suspend) flushes
        them, a crashed worker loses nothing, and a crashed database server loses at most
        the last fraction of a second of step records, whose steps then run again — with the
        effects of transactional steps rolled back alongside their records."""

    async def _read(self, body: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``body`` in a transaction that only reads."""
        return await self._tx(body)

    @abstractmethod
    async def wait_for_work(self, timeout: float, *, light_below: int | None = None) -> None:
        """Return when new work may be leasable (a submit, a freed slot) or after ``timeout``.
        With ``light_below``, only for work of a tenant with fewer runs than that in flight
        (as far as the backend can tell; what a worker waits for with only express slots)."""

    async def _wait_light(self, timeout: float, below: int) -> None:
        """Wait for a signal of work at a level below ``below`` (or of unknown level)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (below, waiter)
        self._light_waiters.append(entry)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout=timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._light_waiters.remove(entry)

    def _signal_local_work(self, level: int | None = None) -> None:
        """Something other waiters may care about changed (a local commit, a notification).
        ``level``: the fewest runs in flight of a tenant that has work now, when known."""
        for below, light in self._light_waiters:
            if (level is None or level < below) and not light.done():
                light.set_result(None)
        self._local_work.set()
        self._generation += 1
        for waiter in self._change_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._change_waiters.clear()

    async def offer_slots(self, worker_id: str, ttl: float, slots: int) -> bool:
        """Let submits hand up to ``slots`` runs straight to this waiting worker, leased for
        ``ttl`` seconds (0 slots: withdraw the offer). False where the backend hands nothing
        directly (SQLite: its wake-ups cost microseconds and its lease no round trip); the
        worker then leases as always. The runs handed come from ``take_handed``."""
        return False

    async def renew_offer(self, worker_id: str) -> bool:
        """Say that ``worker_id`` still waits, so its offer stands for another
        ``config.offer_lifetime`` seconds. False: there is no offer (the worker offers
        again)."""
        return False

    async def withdraw_offer(self, worker_id: str) -> int:
        """Withdraw ``worker_id``'s offer; the slots it still held (fewer than offered: runs
        handed whose notifications are still on their way)."""
        return 0

    def take_handed(self, worker_id: str) -> list[Lease]:
        """The runs submits handed to ``worker_id`` since the last call (see offer_slots)."""
        return []

    def on_handed(  # noqa: B027 - nothing is handed here
        self, worker_id: str, callback: Callable[[], object] | None
    ) -> None:
        """Call ``callback`` (in the event loop, at once) whenever runs are handed to
        ``worker_id``; None stops it. (Here nothing is ever handed.)"""

    async def forget_worker(self, worker_id: str) -> None:  # noqa: B027 - nothing kept here
        """``worker_id`` has stopped for good: drop what is kept for it. (Here nothing.)"""

    async def _listen_for_changes(self) -> None:  # noqa: B027 - optional hook, no-op here
        """Start receiving other processes' notifications, where the backend has them."""

    def _note_grants(self, request_ids: list[str]) -> None:
        # Every process hears of every grant, and only takes its own: forget the others after
        # a while (a waiter of this process takes its grant within a poll interval).
        now = self.clock()
        self.granted_requests.update(request_ids)
        self._grant_log.extend((now, r) for r in request_ids)
        while self._grant_log and now - self._grant_log[0][0] > GRANT_MEMORY:
            self.granted_requests.discard(self._grant_log.popleft()[1])
        self._signal_local_work()

    async def wait_for_change(self, seen: int, timeout: float) -> int:
        """Wait until the change generation moves past ``seen`` (or ``timeout``); return the
        current generation. Unlike wait_for_work, any number of waiters may use it."""
        await self._listen_for_changes()
        if self._generation == seen:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._change_waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
        return self._generation

    async def _seed_plans(self) -> None:
        async def body(tx: Transaction) -> None:
            await tx.execute_many(
                self.q["insert_plan_if_missing"],
                [
                    {
                        "name": p.name,
                        "cap": _limit(p.cap),
                        "weight": p.weight,
                        "max_queued": _limit(p.max_queued),
                    }
                    for p in self.config.plans
                ],
            )

        await self._tx(body)

    async def _append_in_tx(
        self, tx: Transaction, ref: LeaseRef, entries: Sequence[Entry], now: float
    ) -> Appended:
        """Append journal entries fenced by the lease epoch, inside the caller's transaction.
        Both statements are fenced and neither needs the other's result, so a pipelining
        driver sends them together."""
        fence = {"id": ref.run_id, "epoch": ref.epoch, "now": now}
        await tx.execute_many(
            self.q["append_entry"],
            [
                {**fence, "offset": offset, "kind": kind, "name": name, "data": dumps(data)}
                for offset, (kind, name, data) in enumerate(entries)
            ],
        )
        row = await tx.fetchone(self.q["bump_journal"], {**fence, "n": len(entries)})
        if row is None:
            raise LeaseLost(ref.run_id, ref.epoch)
        last = int(row[0])
        return Appended(list(range(last - len(entries) + 1, last + 1)), bool(row[1]))

    async def _ensure_tenant(self, tx: Transaction, tenant: str) -> None:
        """Create ``tenant``'s row, on the default plan, if it has none; InvalidInput when the
        default plan does not exist (no row could be made)."""
        args = {"tenant": tenant, "plan": self.config.default_plan}
        await tx.execute(self.q["ensure_tenant"], args)
        if await tx.fetchone(self.q["tenant_headroom"], args) is None:
            raise InvalidInput(f"default plan {self.config.default_plan!r} does not exist")

    @abstractmethod
    async def _reserve_queued(self, tx: Transaction, tenant: str, n: int) -> bool:
        """Count ``n`` more queued runs for ``tenant`` (created on first sight) within its
        quota, or raise BackpressureError. True when a lease could take the tenant's runs now
        (it is below its cap)."""

    @abstractmethod
    async def _wake_parents(
        self, tx: Transaction, ended: Sequence[tuple[str, str | None]], now: float
    ) -> Deltas:
        """Count down parents waiting on runs that just ended (see sql_durable)."""

    @abstractmethod
    async def _wake_timers(self, tx: Transaction, now: float) -> Deltas:
        """Queue waiting runs whose timer is due (see sql_durable)."""

    async def _hot_statement(self, name: str, params: Params) -> list[Row]:
        """One hot-path statement that is a whole transaction (lease, submit, ack), on its
        generic plan; its rows. PostgreSQL overrides this with one plain round trip."""

        async def body(tx: Transaction) -> list[Row]:
            await self._skip_planning(tx)
            return await tx.fetchall(self.q[name], params)

        return await self._tx(body)

    async def _skip_planning(self, tx: Transaction) -> None:
        """On the hot paths (lease, submit, ack), whose statements are written to plan well
        without their parameters: reuse each prepared statement's generic plan for the rest
        of the transaction instead of planning it anew on every run (PostgreSQL)."""
        if "use_generic_plans" in self.q:
            await tx.execute(self.q["use_generic_plans"])

    async def _adjust_tenants(
        self, tx: Transaction, deltas: Deltas, held: LeaseTimes | None = None
    ) -> bool:
        """Apply counter deltas (see ``Deltas``), and fold the lease times of runs that ended into
        their tenants' run cost; True when an adjusted tenant has runs queued."""
        if not deltas:
            return False
        rows = await tx.fetch_each(
            self.q["adjust_tenant"],
            [
                {
                    "tenant": t,
                    **tenant_counter_params(deltas, t),
                    "cost": held.mean(t) if held else -1.0,
                }
                for t in sorted(deltas)
            ],
        )
        backlog = any(r and r[0][0] > 0 for r in rows)
        if backlog:
            await tx.execute(self.q["notify_work"])
        return backlog


class LeaseTimes:
    """How long the runs that just ended held their lease, per tenant: what the fair lease
    charges a tenant per run (dispatch/policy.py) is a moving average of these."""

    def __init__(self) -> None:
        self._sums: dict[str, list[float]] = {}

    def add(self, tenant: str, leased_at: float | None, now: float) -> None:
        if leased_at is not None:
            total = self._sums.setdefault(tenant, [0.0, 0.0])
            total[0] += max(0.0, now - float(leased_at))
            total[1] += 1

    def mean(self, tenant: str) -> float:
        """Mean lease time of ``tenant``'s ended runs, or -1 when none was measured."""
        total = self._sums.get(tenant)
        return total[0] / total[1] if total else -1.0


def delta(deltas: Deltas, tenant: str) -> list[int]:
    """The counter changes of ``tenant`` (created as no change)."""
    return deltas.setdefault(tenant, [0, 0, 0, 0, 0, 0, 0])


def count_ended(deltas: Deltas, tenant: str, status: str) -> None:
    """Count a run of ``tenant`` that just ended with ``status`` (nothing for other statuses)."""
    at = _ENDED_AT.get(RunStatus(status))
    if at is not None:
        delta(deltas, tenant)[at] += 1


def count_delivery(deltas: Deltas, tenant: str, attempt: int, *, given_back: bool = False) -> None:
    """Count a delivery of attempt number ``attempt`` of a run of ``tenant``: past the first
    attempt it is a redelivery. ``given_back``: the attempt was handed back without counting
    (a release by a draining worker, a suspension), so it is no delivery after all."""
    if attempt > 1:
        delta(deltas, tenant)[REDELIVERED] += -1 if given_back else 1


def merge(into: Deltas, other: Deltas) -> Deltas:
    for tenant, changes in other.items():
        d = delta(into, tenant)
        for i, n in enumerate(changes):
            d[i] += n
    return into


def tenant_counter_params(deltas: Deltas, tenant: str) -> dict[str, int]:
    """The counter parameters of adjust_tenant and settle_tenant."""
    queued, in_flight, succeeded, failed, cancelled, redelivered, expiry_dead = deltas[tenant]
    return {
        "queued": queued,
        "in_flight": in_flight,
        "succeeded": succeeded,
        "failed": failed,
        "cancelled": cancelled,
        "redelivered": redelivered,
        "expiry_dead_letters": expiry_dead,
    }
