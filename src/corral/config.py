"""Frozen configuration. Environment variables are read only at the CLI edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: how an unlimited cap or queue is stored (keeps the lease SQL free of NULL cases)
UNLIMITED = 2_000_000_000


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """A plan tier: the in-flight cap, fair-share weight and queued-run quota of its tenants."""

    name: str
    cap: int | None = None
    weight: float = 1.0
    max_queued: int | None = None


DEFAULT_PLANS: tuple[PlanSpec, ...] = (
    PlanSpec("default"),
    PlanSpec("free", cap=2),
    PlanSpec("pro", cap=20),
)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    #: seconds of queueing worth one priority level: a run waiting this long overtakes a
    #: fresher run one level above it, so low priority cannot starve
    priority_aging: float = 60.0
    #: "tenant": lease from the tenant furthest below its fair share; "fifo": ignore
    #: tenants when choosing (priority then age), still honouring caps. For comparison only.
    fairness: Literal["tenant", "fifo"] = "tenant"
    #: plan given to a tenant the store sees for the first time
    default_plan: str = "default"
    #: plans created when missing (existing plans are data and are left as they are)
    plans: tuple[PlanSpec, ...] = field(default=DEFAULT_PLANS)
    #: expired leases reclaimed per lease call
    reap_batch: int = 100
    #: SQLite: seconds a writer waits for the file lock before giving up
    busy_timeout: float = 30.0
    #: SQLite: PRAGMA synchronous. NORMAL survives process crashes; FULL also power loss.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    #: SQLite: seconds between checkpoints of the write-ahead log, run on a thread of each
    #: process's own so that no commit waits for one. 0: SQLite's own auto-checkpoint, inside
    #: the commit that takes the log past 1,000 pages (tens of milliseconds on a slow disk).
    checkpoint_interval: float = 0.05
    #: SQLite: longest sleep, in seconds, between two tries for the write lock while another
    #: process holds it (the sleeps double from 0.1 ms up to it). 0: SQLite's own busy
    #: handler, which sleeps up to 100 ms between tries: under steady writes from other
    #: processes its waiters keep missing the moments the lock is free, while those writers
    #: keep a fifth to a third more of their own rate (bench/sqlite/lock_wait.py).
    lock_poll: float = 0.002
    #: PostgreSQL: flush every journal append (step, event) to disk before the agent goes on.
    #: Off: appends commit asynchronously; a later synchronous commit (ack, fail, suspend)
    #: flushes them, a worker crash loses nothing, and only a database server crash can lose
    #: the last fraction of a second of step records (those steps then run again).
    durable_steps: bool = False
    #: PostgreSQL: connections in each of the two pools (transactions; hot single statements)
    pool_size: int = 8
    #: PostgreSQL: seconds a waiting worker's offer of free slots stands unless renewed (by
    #: the database's clock). A waiting worker renews it three times as often, so a worker
    #: that stops running while its process lives on (SIGSTOP, a frozen VM, an event loop
    #: blocked by an agent) is handed new runs for at most this long; they then wait out
    #: their lease.
    offer_lifetime: float = 5.0
    #: PostgreSQL: seconds a pending migration waits for a table lock before it gives way and
    #: tries again later (``MIGRATION_TRIES`` times in all). While it waits, every statement
    #: on that table queues behind it: one long transaction would otherwise stop all traffic.
    migration_lock_timeout: float = 2.0
    #: schedules one tenant may create at run time (``Corral.create_schedule``, HTTP): every
    #: worker reloads them all every few seconds
    max_schedules_per_tenant: int = 100

    def __post_init__(self) -> None:
        # values imports this module (UNLIMITED): the checks are imported when used
        from corral.errors import InvalidInput
        from corral.values import check_amount, check_int, check_name, check_positive, check_weight

        check_positive("priority_aging", self.priority_aging)
        check_int("reap_batch", self.reap_batch)
        check_amount("busy_timeout", self.busy_timeout)
        check_amount("checkpoint_interval", self.checkpoint_interval)
        check_amount("lock_poll", self.lock_poll)
        check_int("pool_size", self.pool_size)
        check_positive("offer_lifetime", self.offer_lifetime)
        check_positive("migration_lock_timeout", self.migration_lock_timeout)
        check_int("max_schedules_per_tenant", self.max_schedules_per_tenant)
        if self.fairness not in ("tenant", "fifo"):
            raise InvalidInput(f"fairness must be 'tenant' or 'fifo', not {self.fairness!r}")
        if self.synchronous not in ("NORMAL", "FULL"):  # pasted into a PRAGMA: checked here
            raise InvalidInput(f"synchronous must be 'NORMAL' or 'FULL', not {self.synchronous!r}")
        check_name("default_plan", self.default_plan)
        if not isinstance(self.plans, tuple | list) or not all(
            isinstance(p, PlanSpec) for p in self.plans
        ):
            raise InvalidInput("plans must be a sequence of PlanSpec")
        for plan in self.plans:
            check_name("plan name", plan.name)
            check_weight(f"plan {plan.name!r} weight", plan.weight)
            for what, value in (("cap", plan.cap), ("max_queued", plan.max_queued)):
                if value is not None:
                    check_int(f"plan {plan.name!r} {what}", value)
