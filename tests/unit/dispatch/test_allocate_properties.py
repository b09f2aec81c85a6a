"""Properties of one fair-lease decision, ``corral.dispatch.allocate`` (hypothesis).

``allocate(candidates, slots)`` hands each slot to the candidate whose next start tag
``(vtime + granted * charge, (in_flight + granted) / weight)`` is lowest, ties to the earlier
candidate. Checked here on arbitrary inputs: it never exceeds a cap, a queue or the slots; it
leaves no slot idle that some candidate could take; no slot went to a tenant while another
that could take one had a lower tag; the store may hand it only the ``slots`` first
candidates in its order (what the ``LIMIT`` in ``candidate_tenants`` relies on); and a bigger
backlog buys nothing.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.config import UNLIMITED
from corral.dispatch import TenantLoad, allocate

WEIGHTS = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 10.0]
#: few distinct values, so that ties (the interesting cases) are common
VTIMES = [0.0, 0.0, 0.5, 1.0, 2.5, 40.0]
COSTS = [0.0, 0.01, 0.3, 1.0, 1.0, 7.5]


@st.composite
def loads(draw: st.DrawFn, *, feasible: bool = False) -> list[TenantLoad]:
    """Candidate tenants as the store would pass them. ``feasible``: only what
    ``candidate_tenants`` returns (below the cap, something queued)."""
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        cap = draw(st.one_of(st.integers(1, 20), st.just(UNLIMITED)))
        if feasible:
            in_flight = draw(st.integers(0, min(cap - 1, 40)))
            queued = draw(st.integers(1, 60))
        else:
            in_flight = draw(st.integers(0, 40))
            queued = draw(st.integers(0, 60))
        out.append(
            TenantLoad(
                f"t{i:02d}",
                in_flight,
                cap,
                draw(st.sampled_from(WEIGHTS)),
                queued,
                draw(st.sampled_from(VTIMES)),
                draw(st.sampled_from(COSTS)),
            )
        )
    return out


def limit(c: TenantLoad) -> int:
    return max(0, min(c.cap - c.in_flight, c.queued))


def tag(c: TenantLoad, granted: int) -> tuple[float, float]:
    """The key of ``c``'s next slot after ``granted`` slots in this call."""
    return (c.vtime + granted * c.charge, (c.in_flight + granted) / c.weight)


@given(loads(), st.integers(0, 64))
def test_never_more_than_the_slots_a_cap_or_a_queue_allows(
    candidates: list[TenantLoad], slots: int
) -> None:
    shares = allocate(candidates, slots)
    assert sum(shares.values()) <= slots
    by_name = {c.tenant: c for c in candidates}
    for tenant, n in shares.items():
        c = by_name[tenant]
        assert 0 < n <= limit(c), (c, n)
        assert c.in_flight + n <= c.cap


@given(loads(), st.integers(0, 64))
def test_no_slot_left_idle_that_a_candidate_could_take(
    candidates: list[TenantLoad], slots: int
) -> None:
    shares = allocate(candidates, slots)
    assert sum(shares.values()) == min(slots, sum(limit(c) for c in candidates))


@given(loads(), st.integers(0, 64))
def test_lowest_start_tag_first_with_ties_to_the_earlier_candidate(
    candidates: list[TenantLoad], slots: int
) -> None:
    """Take any tenant i that got a slot and any tenant j that could have taken one more.
    i's last slot was granted at tag ``tag(i, g_i - 1)``; it must not exceed j's next tag
    (else j was lower then, and should have had it), and when equal, i must come first among
    the candidates (ties go to the least recently served)."""
    shares = allocate(candidates, slots)
    for i, a in enumerate(candidates):
        g_a = shares.get(a.tenant, 0)
        if g_a == 0:
            continue
        for j, b in enumerate(candidates):
            g_b = shares.get(b.tenant, 0)
            if j == i or g_b >= limit(b):
                continue
            last_a = tag(a, g_a - 1)
            assert last_a <= tag(b, g_b), (a, g_a, b, g_b)
            if last_a == tag(b, g_b):
                assert i < j, (a, b)


@given(loads(feasible=True), st.integers(0, 64))
def test_only_the_slots_first_candidates_can_be_served(
    candidates: list[TenantLoad], slots: int
) -> None:
    """``candidate_tenants`` sorts by ``vtime, in_flight / weight`` and keeps ``LIMIT slots``
    rows: the allocation must be the same as over every candidate."""
    ordered = sorted(candidates, key=lambda c: tag(c, 0))  # stable: ties keep their order
    assert allocate(ordered[:slots], slots) == allocate(ordered, slots)


@given(loads(), st.integers(0, 64), st.data())
def test_a_bigger_backlog_buys_no_share(
    candidates: list[TenantLoad], slots: int, data: st.DataObject
) -> None:
    """A tenant that did not get all its queue could pile up any number of extra runs (over
    more agents, at other priorities...) and nobody's grant would change."""
    shares = allocate(candidates, slots)
    for index, c in enumerate(candidates):
        if shares.get(c.tenant, 0) < c.queued:
            extra = data.draw(st.integers(1, 10_000))
            inflated = list(candidates)
            inflated[index] = TenantLoad(
                c.tenant, c.in_flight, c.cap, c.weight, c.queued + extra, c.vtime, c.cost
            )
            assert allocate(inflated, slots) == shares


@settings(max_examples=200)
@given(st.lists(st.sampled_from(WEIGHTS), min_size=1, max_size=8), st.integers(1, 200))
def test_backlogged_tenants_from_empty_split_the_slots_by_weight(
    weights: list[float], slots: int
) -> None:
    """From the same vtime with unbounded backlogs and the same run cost, tenant i gets
    ``slots * w_i / W`` (``W`` the sum of weights) to within one slot above and ``n * w_i / W``
    below (n tenants): slots are whole, and every tenant's first slot has the same tag,
    whatever its weight. Over many leases vtime carries the remainders, so the split is the
    weighted one however few the slots (see test_dispatch_simulation)."""
    candidates = [TenantLoad(f"t{i}", 0, UNLIMITED, w, UNLIMITED) for i, w in enumerate(weights)]
    shares = allocate(candidates, slots)
    total, n = sum(weights), len(weights)
    for c in candidates:
        error = shares.get(c.tenant, 0) - slots * c.weight / total
        assert -n * c.weight / total - 1e-9 <= error <= 1 + 1e-9, (c, shares)


def test_a_tenant_with_nothing_in_flight_goes_before_a_busy_one() -> None:
    noisy = TenantLoad("noisy", in_flight=31, cap=UNLIMITED, weight=1.0, queued=5000)
    quiet = TenantLoad("quiet", in_flight=0, cap=UNLIMITED, weight=1.0, queued=1)
    assert allocate([noisy, quiet], 1) == {"quiet": 1}
    assert allocate([noisy, quiet], 3) == {"quiet": 1, "noisy": 2}


def test_vtime_remembers_service_that_in_flight_counts_forget() -> None:
    """Both idle, but ``served`` was just given far more slot time: ``behind`` goes first,
    and then as many times as its lower vtime allows."""
    served = TenantLoad("served", in_flight=0, cap=UNLIMITED, weight=1.0, queued=99, vtime=5.0)
    behind = TenantLoad("behind", in_flight=3, cap=UNLIMITED, weight=1.0, queued=99, vtime=2.0)
    assert allocate([served, behind], 1) == {"behind": 1}
    assert allocate([served, behind], 5) == {"behind": 4, "served": 1}


def test_a_tenant_is_charged_its_run_cost_over_its_weight() -> None:
    """Runs of 4 s cost four times a run of 1 s: with equal weights, the short-run tenant
    gets four slots for each of the long-run tenant's."""
    long = TenantLoad("long", in_flight=0, cap=UNLIMITED, weight=1.0, queued=99, cost=4.0)
    short = TenantLoad("short", in_flight=0, cap=UNLIMITED, weight=1.0, queued=99, cost=1.0)
    assert allocate([long, short], 10) == {"long": 2, "short": 8}
    heavy = TenantLoad("heavy", in_flight=0, cap=UNLIMITED, weight=4.0, queued=99, cost=4.0)
    assert allocate([heavy, short], 10) == {"heavy": 5, "short": 5}


def test_no_slot_to_a_tenant_at_its_cap_or_with_zero_weight() -> None:
    full = TenantLoad("full", in_flight=3, cap=3, weight=1.0, queued=10)
    zero = TenantLoad("zero", in_flight=0, cap=UNLIMITED, weight=0.0, queued=10)
    assert allocate([full, zero], 4) == {}
