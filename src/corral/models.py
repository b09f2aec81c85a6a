"""Value types that cross the store boundary: runs, leases, journal entries, queue statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from corral.dispatch.scaling import TenantLoad as ScalingLoad
from corral.dispatch.scaling import suggested_workers

JSON = Any  # a JSON value: None, bool, int, float, str, list, dict


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What a client asks to run. Validated by the app before it reaches a store."""

    agent: str
    input: JSON = None
    tenant: str = "default"
    priority: int = 0
    idempotency_key: str | None = None
    not_before: float | None = None
    max_attempts: int = 3
    budget: float | None = None
    #: seconds one attempt may run (None: the agent's timeout, or the worker's default)
    timeout: float | None = None
    #: seconds after it is due within which the run's first attempt must start (None: any
    #: time); a run leased later ends failed with RunExpired, its agent never called
    start_within: float | None = None


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    tenant: str
    agent: str
    input: JSON
    status: RunStatus
    priority: int
    attempts: int
    max_attempts: int
    result: JSON
    error: JSON
    created_at: float
    started_at: float | None
    finished_at: float | None
    available_at: float
    lease_epoch: int
    lease_owner: str | None
    lease_expires_at: float | None
    cancel_requested: bool
    idempotency_key: str | None
    parent_id: str | None
    root_id: str
    depth: int
    budget: float | None
    spent: float
    #: seconds one attempt may run, as submitted (None: the agent's or the worker's limit)
    timeout: float | None = None
    #: the latest time its first attempt may start (None: no limit; submit's start_within)
    start_by: float | None = None

    @property
    def done(self) -> bool:
        return self.status.terminal

    @property
    def budget_remaining(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget - self.spent)


@dataclass(frozen=True, slots=True)
class Lease:
    """A run handed to one worker. ``epoch`` is the fencing token for every write."""

    run_id: str
    epoch: int
    tenant: str
    agent: str
    input: JSON
    attempt: int
    max_attempts: int
    expires_at: float
    root_id: str
    parent_id: str | None
    depth: int
    #: journal entries so far; above 1 (the submit entry) the delivery replays a journal
    journal_seq: int = 1
    #: the run's own limit on one attempt, in seconds (None: the agent's or the worker's)
    timeout: float | None = None
    #: the latest time the run's first attempt may start, given only with the lease that
    #: starts it (None: no limit, or the run started before: a run that suspended, was
    #: released by a draining worker or failed an attempt has started already)
    start_by: float | None = None


@dataclass(frozen=True, slots=True)
class LeaseRef:
    run_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Ack:
    run_id: str
    epoch: int
    result: JSON = None


@dataclass(frozen=True, slots=True)
class AckedAndLeased:
    """What ``Store.ack_and_lease`` did: the ids whose acks were refused (their lease was
    lost), the runs leased, and acks it could not write (the database failed after the runs
    were leased): the caller writes those again."""

    lost: frozenset[str]
    leases: list[Lease]
    unwritten: tuple[Ack, ...] = ()


@dataclass(frozen=True, slots=True)
class Appended:
    """Sequence numbers of appended journal entries, and whether cancellation was requested."""

    seqs: list[int]
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True)
class HeartbeatReport:
    lost: frozenset[str] = frozenset()
    cancel_requested: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class JournalEntry:
    run_id: str
    seq: int
    kind: str
    name: str | None
    data: JSON
    epoch: int
    created_at: float


@dataclass(frozen=True, slots=True)
class TenantStats:
    tenant: str
    plan: str
    queued: int
    in_flight: int
    cap: int | None
    weight: float
    oldest_queued_age: float
    #: runs of this tenant that ended with each status, ever (purged ones included)
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    #: of ``queued``, the runs not due yet (a ``not_before`` ahead, a retry's backoff)
    queued_later: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    tenants: tuple[TenantStats, ...]
    queued: int
    in_flight: int
    waiting: int
    oldest_queued_age: float
    global_cap: int | None
    by_status: dict[str, int] = field(default_factory=dict)

    def tenant(self, name: str) -> TenantStats | None:
        return next((t for t in self.tenants if t.tenant == name), None)

    def suggested_workers(
        self,
        *,
        age_target: float,
        slots_per_worker: int,
        min_workers: int = 0,
        max_workers: int | None = None,
    ) -> int:
        """The workers this load needs to keep the oldest queued run under ``age_target``
        seconds, each worker running ``slots_per_worker`` runs (the signal to autoscale on;
        ``corral.dispatch.scaling`` has the formula)."""
        return suggested_workers(
            (
                ScalingLoad(t.queued, t.in_flight, t.cap, t.oldest_queued_age, t.queued_later)
                for t in self.tenants
            ),
            age_target=age_target,
            slots_per_worker=slots_per_worker,
            global_cap=self.global_cap,
            min_workers=min_workers,
            max_workers=max_workers,
        )


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """Where a run stands, as a waiting parent sees it."""

    run_id: str
    status: RunStatus
    result: JSON
    error: JSON

    @property
    def done(self) -> bool:
        return self.status.terminal


class WorkerState(StrEnum):
    RUNNING = "running"
    #: stopping: leases nothing more, lets its runs finish (up to its drain timeout)
    DRAINING = "draining"
    #: not heard from for longer than its lease TTL: killed, frozen or cut off from the
    #: database (its leases have run out too, and its runs gone back to the queue)
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class WorkerPresence:
    """What a worker last reported of itself (``Store.report_worker``): it reports every
    third of its lease TTL while it runs, and its row goes when it stops."""

    worker_id: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    lease_ttl: float
    concurrency: int
    express_slots: int
    #: slots taken, by runs it executes and by agents it gave up on that have not ended
    busy: int
    #: agents that ignored a stop and were given up on, still running (``Worker.stuck``)
    stuck: int
    #: runs it has finished since it started
    completed: int
    draining: bool = False
    #: the agents it executes, by name
    agents: tuple[str, ...] = ()

    @property
    def slots(self) -> int:
        return self.concurrency + self.express_slots

    def state(self, now: float) -> WorkerState:
        """Its state at ``now`` (on the clocks of the reader and the worker, which must
        agree to well within a lease TTL)."""
        if now - self.seen_at > self.lease_ttl:
            return WorkerState.LOST
        return WorkerState.DRAINING if self.draining else WorkerState.RUNNING
