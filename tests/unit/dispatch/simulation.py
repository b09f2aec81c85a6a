"""A discrete-time model of the store's fair lease, built on the pure policy.

It mirrors what ``LeaseMixin.lease`` (store/sql_lease.py) does with ``fairness="tenant"``,
minus the SQL, and with lease calls one after another: every tick, runs that end free their
slot and their tenant's in-flight count, new runs arrive, then each worker with free slots
makes one lease call. A lease call takes the candidate tenants the way ``candidate_tenants``
does (a queued run, below the cap, ordered by ``vtime``, then ``in_flight / weight``, then
least recently served, then name, at most ``free`` of them), lets ``allocate`` split the free
slots, charges each served tenant ``cost / weight`` per run (``settle_tenant``), and takes
each granted tenant's runs in ``sort_key`` order (``available_at - priority * aging``). A run
that ends folds its duration into its tenant's ``cost`` (``adjust_tenant``: 0.8 old + 0.2
new); a tenant that becomes eligible again (a run arrives at its empty queue, or a run ends
that had it at its cap) is lifted to the lowest vtime of the eligible tenants (below their
cap, runs queued), or to the highest vtime when none is eligible (``reserve_queued`` /
``adjust_tenant``). A global cap, when set,
limits the slots of a lease call the way ``global_cap`` / ``total_in_flight`` do.

Everything the tests assert is read back from the ``Trace``: no assertion lives here.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from corral.dispatch import TenantLoad, allocate


@dataclass(frozen=True, slots=True)
class TenantSpec:
    name: str
    cap: int
    weight: float = 1.0


@dataclass(slots=True)
class Job:
    tenant: str
    arrival: int
    duration: int
    priority: int = 0
    agent: str = "agent"
    start: int | None = None

    def sort_key(self, aging: float) -> float:
        return self.arrival - self.priority * aging


@dataclass(frozen=True, slots=True)
class Grant:
    """One lease call: every eligible tenant in the store's order (with when each was last
    served), the ``free`` first of them that ``allocate`` saw, and the slots each got."""

    tick: int
    worker: int
    eligible: tuple[TenantLoad, ...]
    last_served: dict[str, float]
    loads: tuple[TenantLoad, ...]
    free: int
    shares: dict[str, int]


@dataclass(slots=True)
class Trace:
    grants: list[Grant] = field(default_factory=list)
    #: per tick, after the lease calls: tenant -> runs in flight
    in_flight: list[dict[str, int]] = field(default_factory=list)
    #: per tick, after the lease calls: tenant -> runnable runs still queued
    queued: list[dict[str, int]] = field(default_factory=list)
    #: per tick, after the lease calls: free worker slots and the global-cap headroom
    free_slots: list[int] = field(default_factory=list)
    completions: list[tuple[int, str]] = field(default_factory=list)
    #: every slot handed out, in order: (tick, tenant)
    starts: list[tuple[int, str]] = field(default_factory=list)


class FairDispatcher:
    def __init__(
        self,
        tenants: Sequence[TenantSpec],
        *,
        workers: int,
        slots_per_worker: int,
        aging: float = 60.0,
        global_cap: int | None = None,
    ) -> None:
        self.tenants = {t.name: t for t in tenants}
        self.workers = [0] * workers  # busy slots per worker
        self.slots_per_worker = slots_per_worker
        self.aging = aging
        self.global_cap = global_cap
        self.in_flight: Counter[str] = Counter()
        self.last_served: dict[str, float] = {t.name: 0.0 for t in tenants}
        self.vtime: dict[str, float] = {t.name: 0.0 for t in tenants}
        self.cost: dict[str, float] = {t.name: 1.0 for t in tenants}
        self._queues: dict[str, list[tuple[float, int, Job]]] = {t.name: [] for t in tenants}
        self._seq = itertools.count()
        self._running: list[tuple[int, int, int, Job]] = []  # (end, seq, worker, job)

    def queued(self, tenant: str) -> int:
        return len(self._queues[tenant])

    def run(self, jobs: Iterable[Job], *, ticks: int) -> Trace:
        trace = Trace()
        pending = sorted(jobs, key=lambda j: j.arrival)
        next_arrival = 0
        for tick in range(ticks):
            while self._running and self._running[0][0] <= tick:
                _, _, worker, job = heapq.heappop(self._running)
                self.workers[worker] -= 1
                at_cap = self.in_flight[job.tenant] >= self.tenants[job.tenant].cap
                if at_cap and self._queues[job.tenant]:
                    self._lift(job.tenant)  # eligible again (if it has runs queued)
                self.in_flight[job.tenant] -= 1
                self.cost[job.tenant] = 0.8 * self.cost[job.tenant] + 0.2 * job.duration
                trace.completions.append((tick, job.tenant))
            while next_arrival < len(pending) and pending[next_arrival].arrival <= tick:
                job = pending[next_arrival]
                next_arrival += 1
                if not self._queues[job.tenant]:
                    self._lift(job.tenant)
                heapq.heappush(
                    self._queues[job.tenant], (job.sort_key(self.aging), next(self._seq), job)
                )
            for worker in range(len(self.workers)):
                self._lease(tick, worker, trace)
            trace.in_flight.append({t: self.in_flight[t] for t in self.tenants})
            trace.queued.append({t: self.queued(t) for t in self.tenants})
            trace.free_slots.append(self._free(None))
        return trace

    def _lift(self, tenant: str) -> None:
        waiting = [
            self.vtime[t.name]
            for t in self.tenants.values()
            if self._queues[t.name] and self.in_flight[t.name] < t.cap
        ]
        floor = min(waiting) if waiting else max(self.vtime.values())
        self.vtime[tenant] = max(self.vtime[tenant], floor)

    def _free(self, worker: int | None) -> int:
        if worker is None:
            free = sum(self.slots_per_worker - busy for busy in self.workers)
        else:
            free = self.slots_per_worker - self.workers[worker]
        if self.global_cap is not None:
            free = min(free, self.global_cap - sum(self.in_flight.values()))
        return max(free, 0)

    def _lease(self, tick: int, worker: int, trace: Trace) -> None:
        free = self._free(worker)
        if free <= 0:
            return
        eligible = [
            t
            for t in self.tenants.values()
            if self._queues[t.name] and self.in_flight[t.name] < t.cap
        ]
        eligible.sort(
            key=lambda t: (
                self.vtime[t.name],
                self.in_flight[t.name] / t.weight,
                self.last_served[t.name],
                t.name,
            )
        )
        ordered = tuple(
            TenantLoad(
                t.name,
                self.in_flight[t.name],
                t.cap,
                t.weight,
                self.queued(t.name),
                self.vtime[t.name],
                self.cost[t.name],
            )
            for t in eligible
        )
        loads = ordered[:free]
        shares = allocate(loads, free)
        if not shares:
            return
        served = {t.name: self.last_served[t.name] for t in eligible}
        trace.grants.append(Grant(tick, worker, ordered, served, loads, free, shares))
        for tenant, n in shares.items():
            for _ in range(n):
                _, _, job = heapq.heappop(self._queues[tenant])
                job.start = tick
                trace.starts.append((tick, tenant))
                heapq.heappush(self._running, (tick + job.duration, next(self._seq), worker, job))
            self.workers[worker] += n
            self.in_flight[tenant] += n
            self.last_served[tenant] = tick
            self.vtime[tenant] += n * next(c for c in ordered if c.tenant == tenant).charge


def fair_shares(tenants: Sequence[TenantSpec], slots: int) -> dict[str, float]:
    """Continuous weighted max-min shares of ``slots`` among always-backlogged tenants with
    caps: each gets ``min(cap, level * weight)``, the level chosen so the shares fill the
    slots (or every tenant is at its cap)."""
    shares: dict[str, float] = {}
    open_ = list(tenants)
    left = float(slots)
    while open_:
        level = left / sum(t.weight for t in open_)
        capped = [t for t in open_ if t.cap <= level * t.weight]
        if not capped:
            for t in open_:
                shares[t.name] = level * t.weight
            return shares
        for t in capped:
            shares[t.name] = float(t.cap)
            left -= t.cap
        open_ = [t for t in open_ if t not in capped]
    return shares


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all values are equal, 1/n when one takes everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0
