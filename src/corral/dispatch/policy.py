"""Fair lease allocation: start-time fair queueing over tenants, charged in slot-seconds.

Design (docs/fairness.md). The unit of fairness is the tenant. Each tenant has a virtual time
``vtime``: the slot-seconds it has been charged, divided by its weight. Every lease of one of
its runs charges ``cost / weight``, ``cost`` being a moving average of how long the tenant's
runs hold their lease. A free slot goes to the candidate (a tenant below its in-flight cap
with a runnable run) whose *next start tag* ``vtime + granted * cost / weight`` is lowest;
ties go to the lower ``in_flight / weight``, then to the earlier candidate (the store orders
candidates by least recently served). So:

- weights hold whether slots are plentiful or scarce (one slot shared by weights 1 and 3
  gives the second three leases for each of the first's), because vtime remembers service
  where an in-flight count forgets it the moment a run ends;
- a tenant whose runs are long is charged for the slot time it takes, so it cannot crowd
  out a tenant whose runs are short;
- idle time earns no credit: the store lifts a tenant that starts queueing again to the
  lowest vtime among the tenants already waiting, and the in-flight tie-break then serves
  the newcomer first. A quiet tenant's run therefore waits for about one free slot,
  however deep another tenant's backlog is.

A tenant gains nothing by spreading its backlog over agents, priorities or child runs: none of
those enter the choice of tenant. Priority (with aging) orders runs only *within* a tenant.

Only the ``slots`` candidates that come first in the store's order (vtime, in-flight share,
least recently served) can receive a slot — the k-th new tenant to get one is the k-th in
that order — so the store never needs to lock more than ``slots`` tenant rows.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

#: the least a lease is charged (seconds): even a run that ends at once cost a dispatch, and a
#: zero charge would let its tenant be chosen forever
MIN_RUN_COST = 0.01


@dataclass(frozen=True, slots=True)
class TenantLoad:
    tenant: str
    in_flight: int
    cap: int
    weight: float
    queued: int
    vtime: float = 0.0
    #: expected slot-seconds of one of this tenant's runs (what one lease is charged)
    cost: float = 1.0

    @property
    def charge(self) -> float:
        """Virtual time one lease adds to this tenant."""
        return max(self.cost, MIN_RUN_COST) / self.weight


def allocate(candidates: Sequence[TenantLoad], slots: int) -> dict[str, int]:
    """How many of ``slots`` new leases each candidate tenant gets (zero entries omitted)."""
    heap: list[tuple[float, float, int]] = []
    limits: list[int] = []
    for index, c in enumerate(candidates):
        limit = min(c.cap - c.in_flight, c.queued)
        limits.append(limit)
        if limit > 0 and c.weight > 0:
            heap.append((c.vtime, c.in_flight / c.weight, index))
    heapq.heapify(heap)
    granted = [0] * len(candidates)
    while slots > 0 and heap:
        _, _, index = heapq.heappop(heap)
        granted[index] += 1
        slots -= 1
        c = candidates[index]
        if granted[index] < limits[index]:
            n = granted[index]
            heapq.heappush(heap, (c.vtime + n * c.charge, (c.in_flight + n) / c.weight, index))
    return {candidates[i].tenant: n for i, n in enumerate(granted) if n}
