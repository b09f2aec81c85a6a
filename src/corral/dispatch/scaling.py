"""How many workers the queue needs: a pure function of the load signal, no I/O.

For each tenant ``t`` with ``q`` runs queued and due (runs due later, after a
``not_before`` or a retry's backoff, ask for no slot until they are), ``f`` in flight,
in-flight cap ``c`` and oldest queued age ``a``, against the age target ``T`` (the queueing
SLA)::

    runnable_t = q                          (no cap)
               = clamp(c - f, 0, q)         (a cap: runs beyond it cannot start anyway)
    urgency_t  = min(1, a / T)
    slots_t    = f + ceil(runnable_t * urgency_t)

    slots   = min(sum(slots_t), global cap)           (the global cap, when set)
    slots   = max(slots, 1) when anything is queued   (a queue never scales to zero, not
                                                       even one of runs due later)
    workers = clamp(ceil(slots / slots_per_worker), min_workers, max_workers)

Busy slots are kept. Queued runs ask for slots in proportion to how close the oldest of them
is to the target: a fresh backlog asks for little (it will drain with the slots there are),
a backlog at or past the target asks for a slot per runnable run. Runs a tenant's cap holds
back never ask for a slot, so a tenant with a cap of 2 and a deep queue does not inflate the
count. The suggestion moves with depth and with age, as a KEDA ScaledObject expects of its
metric (deploy/keda/worker-scaledobject.yaml). ``QueueStats.suggested_workers`` applies it to
what ``stats()`` returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TenantLoad:
    queued: int
    in_flight: int
    cap: int | None
    oldest_queued_age: float
    #: of ``queued``, the runs not due yet
    later: int = 0


def suggested_workers(
    tenants: Iterable[TenantLoad],
    *,
    age_target: float,
    slots_per_worker: int,
    global_cap: int | None = None,
    min_workers: int = 0,
    max_workers: int | None = None,
) -> int:
    if age_target <= 0:
        raise ValueError("age_target must be > 0")
    if slots_per_worker < 1:
        raise ValueError("slots_per_worker must be >= 1")
    slots = 0
    queued = 0
    for t in tenants:
        queued += max(0, t.queued)
        runnable = max(0, t.queued - max(0, t.later))
        if t.cap is not None:
            runnable = min(runnable, max(0, t.cap - t.in_flight))
        urgency = min(1.0, max(0.0, t.oldest_queued_age) / age_target)
        slots += max(0, t.in_flight) + math.ceil(runnable * urgency)
    if global_cap is not None:
        slots = min(slots, global_cap)
    if queued > 0:
        slots = max(slots, 1)
    workers = max(min_workers, math.ceil(slots / slots_per_worker))
    return workers if max_workers is None else min(workers, max_workers)
