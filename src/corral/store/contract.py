"""The store contract: the domain verbs every backend implements, nothing SQL-shaped.

One contract test suite (tests/contract) runs against every implementation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from corral.clock import Clock
from corral.config import PlanSpec, StoreConfig
from corral.dispatch.schedule import Schedule, ScheduledTick, TickResult
from corral.models import (
    JSON,
    Ack,
    AckedAndLeased,
    Appended,
    HeartbeatReport,
    JournalEntry,
    Lease,
    LeaseRef,
    QueueStats,
    Run,
    RunOutcome,
    RunSpec,
    RunStatus,
    WorkerPresence,
)
from corral.store.sql_resources import ResourceLimits, ResourceSnapshot
from corral.store.user_sql import StepTransaction

if TYPE_CHECKING:
    from corral.store.sql_keys import ApiKey, DeliveryCounters


class Store(Protocol):
    dialect: str
    #: shared-resource requests this process learned were granted (notifications)
    granted_requests: set[str]
    config: StoreConfig
    clock: Clock
    #: whether submits hand runs straight to waiting workers (offer_slots)
    hands_off: ClassVar[bool]

    async def open(self) -> None:
        """Connect and apply pending migrations (safe when many processes start at once)."""

    async def close(self) -> None: ...

    @property
    def is_open(self) -> bool:
        """Opened and not closed since."""

    # submission and reading
    async def submit(self, specs: Sequence[RunSpec]) -> list[str]: ...
    async def submit_scheduled(
        self,
        name: str,
        tick: float,
        spec: RunSpec,
        *,
        run: bool = True,
        definition: str | None = None,
    ) -> str | None:
        """The run of schedule ``name`` for ``tick``, from the one caller that moves the
        schedule to that tick (in the same transaction); None for every other caller, for the
        tick a schedule is first seen at, and without ``run`` (the schedule moves past the
        tick without a run). ``definition``: a stored schedule's text, which its row must
        still hold (deleted or replaced: no run)."""
        ...

    async def submit_ticks(self, ticks: Sequence[ScheduledTick]) -> list[TickResult]:
        """``submit_scheduled`` for many ticks in one transaction, each with its own result:
        a tenant over its quota of queued runs keeps its ticks untaken (their results hold
        the error) while the other tenants' runs are submitted."""
        ...

    async def schedule_ticks(
        self, tenant: str | None = None, *, code_only: bool = False
    ) -> dict[str, tuple[float, float | None]]:
        """Per schedule seen (stored ones: ``tenant``'s only if given, none with
        ``code_only``): its last tick, and the latest tick that got a run (or None)."""
        ...

    async def create_schedule(self, schedule: Schedule) -> None:
        """Store a schedule created at run time; ``ScheduleExists``, ``ScheduleLimitReached``
        (its tenant has ``StoreConfig.max_schedules_per_tenant`` already)."""
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Delete a stored schedule by its full name; False when there is none."""
        ...

    async def stored_schedules(self, tenant: str | None = None) -> list[Schedule]:
        """The schedules created at run time (``tenant``'s only, if given), by name."""
        ...

    async def due_schedules(self, until: float) -> list[Schedule]:
        """The stored schedules not paused whose next tick is at or before ``until``."""
        ...

    async def stored_schedule_counts(self) -> tuple[int, int]:
        """How many stored schedules run, and how many are paused."""
        ...

    async def pause_schedule(self, name: str) -> bool:
        """Pause a stored schedule: no run for its ticks until resumed; False: none."""
        ...

    async def resume_schedule(self, name: str) -> bool:
        """Resume a stored schedule from its latest tick (no make-up); False: none."""
        ...

    async def get(self, run_id: str) -> Run | None: ...
    async def list_runs(
        self,
        *,
        tenant: str | None = None,
        status: RunStatus | str | None = None,
        agent: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Run]: ...
    async def cancel(self, run_id: str) -> Run: ...
    async def retry(self, run_id: str, *, attempts: int | None = None) -> Run: ...

    # leasing and fenced writes (a stale epoch raises LeaseLost or is reported as lost)
    async def lease(
        self, worker_id: str, ttl: float, limit: int, *, light_below: int | None = None
    ) -> list[Lease]: ...
    async def offer_slots(self, worker_id: str, ttl: float, slots: int) -> bool:
        """Let submits hand up to ``slots`` runs straight to this waiting worker, stored
        already leased to it for ``ttl`` seconds, so that no lease stands between accepting a
        run and starting it; 0 slots withdraws the offer. False where the backend hands
        nothing directly (SQLite). Every lease the worker takes counts against its offer."""
        ...

    async def renew_offer(self, worker_id: str) -> bool:
        """Keep ``worker_id``'s offer standing: submits hand nothing to an offer not offered
        or renewed within ``config.offer_lifetime`` seconds (a worker that stopped running
        while its process and session live on). False: no offer stands; offer again."""
        ...

    async def withdraw_offer(self, worker_id: str) -> int:
        """End ``worker_id``'s offer; the slots it still held. Fewer than were offered and not
        yet handed: that many runs were handed whose notifications are on their way."""
        ...

    def take_handed(self, worker_id: str) -> list[Lease]:
        """The runs handed to ``worker_id`` since the last call (see offer_slots)."""
        ...

    def on_handed(self, worker_id: str, callback: Callable[[], object] | None) -> None:
        """Call ``callback`` (in the event loop, at once) whenever runs are handed to
        ``worker_id``, so that they start without waiting for the worker's loop, or are given
        back at once when it has no slot; None stops it."""
        ...

    async def forget_worker(self, worker_id: str) -> None:
        """``worker_id`` has stopped for good (its offer withdrawn, its leftovers given back):
        drop what this store holds for it (a listening channel, a session lock)."""
        ...

    async def report_worker(self, presence: WorkerPresence) -> None:
        """Write or renew a worker's report of itself (every third of its lease TTL)."""
        ...

    async def remove_worker(self, worker_id: str) -> None:
        """A worker has stopped: its report goes."""
        ...

    async def workers(self) -> list[WorkerPresence]:
        """Every worker's latest report (those of killed workers for an hour), by host."""
        ...

    async def heartbeat(self, ref: LeaseRef, ttl: float) -> bool: ...
    async def heartbeat_many(self, refs: Sequence[LeaseRef], ttl: float) -> HeartbeatReport: ...
    async def ack(self, ref: LeaseRef, result: JSON = None) -> None: ...
    async def ack_many(self, acks: Sequence[Ack]) -> frozenset[str]: ...
    async def ack_and_lease(
        self,
        acks: Sequence[Ack],
        worker_id: str,
        ttl: float,
        limit: int,
        *,
        light_below: int | None = None,
    ) -> AckedAndLeased:
        """``ack_many(acks)`` then ``lease(...)``, in one round trip where the backend can.
        On PostgreSQL the one-statement form writes acks of runs with a parent after its
        lease (the slots they free are leased in the same call, but the lease has ranked
        their tenants before those acks): callers send those with ``ack_many`` first, as
        the worker does."""
        ...

    async def fail(
        self, ref: LeaseRef, error: JSON, *, retryable: bool, retry_at: float | None = None
    ) -> RunStatus: ...
    async def release(self, ref: LeaseRef, *, unstarted: bool = False) -> None: ...
    async def release_many(
        self, refs: Sequence[LeaseRef], *, unstarted: bool = False
    ) -> frozenset[str]:
        """Give the runs back, no attempt counted. ``unstarted``: the caller never called
        their agents (a handed run it had no slot for), so a run whose first start was one
        of these leases is held to its start_within again when next leased."""
        ...

    async def leased_to(self, worker_id: str) -> list[LeaseRef]:
        """The runs the store holds as running under a lease of ``worker_id``: what a
        stopping worker that has written its acks gives back (release_many) instead of
        leaving it to lease expiry: a lease call abandoned after its commit, a run handed
        after the offer was withdrawn."""
        ...

    async def finish_cancelled(self, ref: LeaseRef) -> None: ...

    # journal
    async def append(
        self, ref: LeaseRef, entries: Sequence[tuple[str, str | None, JSON]]
    ) -> Appended: ...
    async def journal(
        self, run_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[JournalEntry]: ...

    # durable execution: fan-out, suspension, budgets
    async def spawn(
        self,
        ref: LeaseRef,
        specs: Sequence[RunSpec],
        *,
        max_children: int,
        max_depth: int,
        entry: tuple[str, str | None, JSON],
    ) -> list[str]: ...
    async def suspend(
        self,
        ref: LeaseRef,
        *,
        children: Sequence[str] = (),
        wake_at: float | None = None,
        entry: tuple[str, str | None, JSON],
    ) -> bool: ...
    async def charge(
        self, ref: LeaseRef, amount: float, entry: tuple[str, str | None, JSON] | None
    ) -> float | None: ...
    async def transact(
        self,
        ref: LeaseRef,
        name: str,
        fn: Callable[[StepTransaction], Awaitable[JSON]],
        encode: Callable[[Any], JSON],
    ) -> tuple[JSON, bool]: ...
    async def outcomes(
        self, run_ids: Sequence[str], *, parent: str | None = None
    ) -> list[RunOutcome]:
        """How each run stands; RunNotFound for an unknown id, and with ``parent``,
        InvalidInput for a run that is not its child."""
        ...

    async def set_tenant_fanout(
        self, tenant: str, *, max_children: int | None, max_depth: int | None
    ) -> None: ...

    # shared contention resources (capacity and rate limits for all processes)
    async def define_resource(self, limits: ResourceLimits) -> None: ...
    async def resource_request(
        self,
        name: str,
        request_id: str,
        agent_id: str,
        *,
        weight: float,
        tokens: int,
        ttl: float,
        max_waiters: int,
        max_waiters_per_agent: int | None,
    ) -> str: ...
    async def resource_poll(
        self, name: str, request_ids: Sequence[str], ttl: float
    ) -> dict[str, str]: ...
    async def resource_reclaim(
        self, name: str, request_id: str, agent_id: str, *, weight: float, tokens: int, ttl: float
    ) -> None: ...
    async def resource_release(
        self, name: str, request_id: str, *, tokens_used: int | None, ttl: float
    ) -> None: ...
    async def resource_pause(self, name: str, until: float) -> None: ...
    async def resource_snapshot(self, name: str) -> ResourceSnapshot: ...
    async def wait_for_change(self, seen: int, timeout: float) -> int: ...

    # retention: trees of runs that all ended before ``before``, with their journals
    async def purge_finished(self, before: float, *, limit: int = 1000) -> int: ...

    async def expire_overdue(self, *, limit: int = 500) -> int:
        """End up to ``limit`` undelivered runs past their ``start_by`` as ``failed`` with
        ``RunExpired`` (no attempt counted; waiting parents see the failure); how many."""
        ...

    # load signal and tenancy
    async def stats(self) -> QueueStats: ...
    async def wait_for_work(self, timeout: float, *, light_below: int | None = None) -> None: ...
    async def set_plan(self, plan: PlanSpec) -> None: ...
    async def plans(self) -> list[PlanSpec]: ...
    async def set_tenant(
        self,
        tenant: str,
        *,
        plan: str | None = None,
        cap: int | None = None,
        weight: float | None = None,
        max_queued: int | None = None,
    ) -> None: ...
    async def set_global_cap(self, cap: int | None) -> None: ...

    # the HTTP service: API keys (stored hashed) and its read-only queries
    async def create_api_key(
        self,
        key_id: str,
        key_hash: str,
        tenant: str,
        *,
        admin: bool = False,
        label: str | None = None,
    ) -> ApiKey: ...
    async def api_key_by_hash(self, key_hash: str) -> ApiKey | None: ...
    async def list_api_keys(self) -> list[ApiKey]: ...
    async def revoke_api_key(self, key_id: str) -> bool: ...
    async def ping(self) -> None: ...
    async def children(self, run_id: str, *, limit: int = 100) -> list[Run]: ...
    async def progress(self, run_ids: Sequence[str]) -> dict[str, tuple[RunStatus, int]]: ...
    async def queue_waits(
        self, since: float, until: float, *, limit: int = 10_000
    ) -> list[tuple[float, float]]: ...
    async def delivery_counters(self) -> DeliveryCounters: ...
