"""Properties of the fair lease over time: a simulated dispatcher loop (simulation.py) that
leases the way the store does, with ``allocate`` deciding every lease call (hypothesis).

At every tick: no tenant above its cap, no more runs than slots or the global cap, no slot
idle while a tenant below its cap has a runnable run. No starvation: every run starts, and a
tenant with nothing in flight is passed over only for tenants that also have nothing in
flight and were served longer ago (so it waits for at most one slot per other tenant). In
the long run, always-backlogged tenants hold their weighted max-min share of the slots.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.config import UNLIMITED
from tests.unit.dispatch.simulation import (
    FairDispatcher,
    Job,
    TenantSpec,
    fair_shares,
    jain,
)

WEIGHTS = [0.5, 1.0, 2.0, 3.0, 4.0]


@st.composite
def tenant_specs(draw: st.DrawFn, *, max_tenants: int = 6, capped: bool = True) -> list[TenantSpec]:
    n = draw(st.integers(1, max_tenants))
    caps = st.one_of(st.integers(1, 12), st.just(UNLIMITED)) if capped else st.just(UNLIMITED)
    return [
        TenantSpec(f"t{i}", cap=draw(caps), weight=draw(st.sampled_from(WEIGHTS))) for i in range(n)
    ]


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[TenantSpec], list[Job], int, int, int | None]:
    tenants = draw(tenant_specs())
    jobs = []
    for t in tenants:
        for _ in range(draw(st.integers(0, 40))):
            jobs.append(
                Job(
                    t.name,
                    arrival=draw(st.integers(0, 60)),
                    duration=draw(st.integers(1, 10)),
                    priority=draw(st.integers(-3, 3)),
                    agent=f"agent{draw(st.integers(0, 5))}",
                )
            )
    workers = draw(st.integers(1, 4))
    slots_per_worker = draw(st.integers(1, 8))
    global_cap = draw(st.one_of(st.none(), st.integers(1, workers * slots_per_worker)))
    return tenants, jobs, workers, slots_per_worker, global_cap


def horizon(jobs: list[Job]) -> int:
    """An upper bound on when the last run ends: no slot idles while work is runnable, so
    even one slot at a time finishes every run by the last arrival plus all the work."""
    return max((j.arrival for j in jobs), default=0) + sum(j.duration for j in jobs) + 2


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_caps_and_slots_hold_and_no_slot_idles_at_every_tick(
    workload: tuple[list[TenantSpec], list[Job], int, int, int | None],
) -> None:
    tenants, jobs, workers, per_worker, global_cap = workload
    trace = FairDispatcher(
        tenants, workers=workers, slots_per_worker=per_worker, global_cap=global_cap
    ).run(jobs, ticks=horizon(jobs))
    slots = workers * per_worker
    limit = slots if global_cap is None else min(slots, global_cap)
    for in_flight, queued, free in zip(
        trace.in_flight, trace.queued, trace.free_slots, strict=True
    ):
        for t in tenants:
            assert in_flight[t.name] <= t.cap
        assert sum(in_flight.values()) <= limit
        if free > 0:  # a free slot: no tenant below its cap may have a runnable run
            assert all(queued[t.name] == 0 or in_flight[t.name] >= t.cap for t in tenants)


@settings(max_examples=150, deadline=None)
@given(workloads())
def test_no_starvation_every_eligible_tenant_lags_the_floor_by_at_most_one_lease_call(
    workload: tuple[list[TenantSpec], list[Job], int, int, int | None],
) -> None:
    """The bounded-lag invariant of fair queueing, which bounds every wait: at every lease
    call, no eligible tenant's vtime is ahead of the lowest eligible vtime (the floor) by more
    than one lease call's worth of charges (``slots_per_worker`` runs at the largest run
    cost). Idle and capped time bank nothing, and vtimes only grow, so a tenant's next slot
    comes after at most that lag's worth of slots to each other tenant; and every run starts."""
    tenants, jobs, workers, per_worker, global_cap = workload
    trace = FairDispatcher(
        tenants, workers=workers, slots_per_worker=per_worker, global_cap=global_cap
    ).run(jobs, ticks=horizon(jobs))
    assert all(j.start is not None for j in jobs), "a run never started"
    assert len(trace.completions) == len(jobs)
    largest_cost = max([1, *(j.duration for j in jobs)])
    floor = 0.0
    for grant in trace.grants:
        lowest = min(c.vtime for c in grant.eligible)
        assert lowest >= floor - 1e-9, "the floor went back"
        floor = lowest
        for c in grant.eligible:
            assert c.vtime <= lowest + per_worker * largest_cost / c.weight + 1e-9, (grant, c)


def test_a_quiet_tenant_gets_the_next_free_slot_beside_a_deep_backlog() -> None:
    """One tenant has 5,000 runs queued; another submits one run now and then. Each of the
    quiet tenant's runs takes the first slot handed out after it arrives."""
    rng = random.Random(7)
    tenants = [TenantSpec("noisy", UNLIMITED), TenantSpec("quiet", UNLIMITED)]
    jobs = [Job("noisy", 0, rng.randint(1, 10)) for _ in range(5000)]
    quiet = [Job("quiet", tick, rng.randint(1, 10)) for tick in range(5, 1500, 23)]
    trace = FairDispatcher(tenants, workers=2, slots_per_worker=4).run(jobs + quiet, ticks=1600)
    for job in quiet:
        first = next(tenant for tick, tenant in trace.starts if tick >= job.arrival)
        assert first == "quiet" and job.start is not None, job
        assert job.start == next(tick for tick, _ in trace.starts if tick >= job.arrival)


def backlogged_run(
    tenants: list[TenantSpec], workers: int, per_worker: int, ticks: int, seed: int
) -> tuple[dict[str, float], Counter[str], list[dict[str, int]]]:
    """Every tenant has more runs than it can finish; durations 1-10 ticks, the same
    distribution for all. Returns the mean in-flight per tenant and the completions per
    tenant after a warm-up, and the per-tick in-flight counts."""
    rng = random.Random(seed)
    slots = workers * per_worker
    jobs = [Job(t.name, 0, rng.randint(1, 10)) for t in tenants for _ in range(ticks * slots // 3)]
    trace = FairDispatcher(tenants, workers=workers, slots_per_worker=per_worker).run(
        jobs, ticks=ticks
    )
    warm = ticks // 6
    assert all(q[t.name] > 0 for q in trace.queued for t in tenants), "a tenant ran dry"
    mean = {
        t.name: sum(s[t.name] for s in trace.in_flight[warm:]) / (ticks - warm) for t in tenants
    }
    done = Counter(tenant for tick, tenant in trace.completions if tick >= warm)
    return mean, done, trace.in_flight[warm:]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tenant_specs(max_tenants=4), st.integers(0, 2**32 - 1))
def test_weights_are_honoured_in_the_long_run_when_slots_are_plentiful(
    tenants: list[TenantSpec], seed: int
) -> None:
    """4 workers x 8 slots, 1-4 always-backlogged tenants of weights 0.5-4, some capped.
    Slots are whole, so a tenant may hold ``1 + n * w / W`` slots away from its continuous
    share (n tenants of total weight W): over 1,200 ticks each tenant's mean in-flight stays
    within that of its continuous weighted max-min share, and throughput per weight among
    uncapped tenants with at least 4 slots of fair share has a Jain's index of at least 0.98."""
    mean, done, _ = backlogged_run(tenants, workers=4, per_worker=8, ticks=1200, seed=seed)
    fair = fair_shares(tenants, 32)
    total = sum(t.weight for t in tenants)
    for t in tenants:
        assert abs(mean[t.name] - fair[t.name]) <= 1 + len(tenants) * t.weight / total, (
            t,
            mean,
            fair,
        )
    uncapped = [t for t in tenants if fair[t.name] < t.cap - 1]
    if len(uncapped) >= 2 and all(fair[t.name] >= 4 for t in uncapped):
        assert jain([done[t.name] / t.weight for t in uncapped]) >= 0.98, (done, fair)


def test_weights_are_honoured_with_a_single_slot() -> None:
    tenants = [TenantSpec("light", UNLIMITED, 1.0), TenantSpec("heavy", UNLIMITED, 3.0)]
    _, done, _ = backlogged_run(tenants, workers=1, per_worker=1, ticks=3000, seed=1)
    assert done["heavy"] / done["light"] == pytest.approx(3.0, rel=0.1), done


def test_weights_are_honoured_with_ten_tenants_on_32_slots() -> None:
    tenants = [TenantSpec(f"t{i}", UNLIMITED, 1.0 if i % 2 else 4.0) for i in range(10)]
    _, done, _ = backlogged_run(tenants, workers=4, per_worker=8, ticks=1500, seed=2)
    assert jain([done[t.name] / t.weight for t in tenants]) >= 0.99, done
