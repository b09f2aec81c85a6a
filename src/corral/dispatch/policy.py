"""Fair lease allocation.

Design. The unit of fairness is the tenant. When a worker asks for ``slots`` runs, the store
locks the candidate tenants (below their in-flight cap, with a runnable run), ordered by
``in_flight / weight`` and then by how long ago each was last served, and hands them here.
``allocate`` water-fills the slots: each slot goes to the tenant whose share
``(in_flight + granted) / weight`` is lowest, ties to the earlier candidate (the one served
longest ago). This is weighted max-min fairness over *in-flight* runs, computed afresh on every
lease from counters the store keeps transactionally, so it holds across any number of workers.

A tenant gains nothing by spreading its backlog over agents, priorities or child runs: none of
those enter the choice of tenant. Priority (with aging) orders runs only *within* a tenant.

Only the ``slots`` lowest-share candidates can receive a slot (the k-th new tenant to get one
is the k-th lowest), so the store never needs to lock more than ``slots`` tenant rows.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TenantLoad:
    tenant: str
    in_flight: int
    cap: int
    weight: float
    queued: int


def allocate(candidates: Sequence[TenantLoad], slots: int) -> dict[str, int]:
    """How many of ``slots`` new leases each candidate tenant gets (zero entries omitted)."""
    heap: list[tuple[float, int]] = []
    limits: list[int] = []
    for index, c in enumerate(candidates):
        limit = min(c.cap - c.in_flight, c.queued)
        limits.append(limit)
        if limit > 0 and c.weight > 0:
            heap.append((c.in_flight / c.weight, index))
    heapq.heapify(heap)
    granted = [0] * len(candidates)
    while slots > 0 and heap:
        _, index = heapq.heappop(heap)
        granted[index] += 1
        slots -= 1
        c = candidates[index]
        if granted[index] < limits[index]:
            heapq.heappush(heap, ((c.in_flight + granted[index]) / c.weight, index))
    return {candidates[i].tenant: n for i, n in enumerate(granted) if n}
