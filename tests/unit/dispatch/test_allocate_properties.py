"""Properties of one fair-lease decision, ``corral.dispatch.allocate`` (hypothesis).

``allocate(candidates, slots)`` water-fills ``slots`` over the candidate tenants by
``(in_flight + granted) / weight``, ties to the earlier candidate. Checked here on arbitrary
inputs: it never exceeds a cap, a queue or the slots; it leaves no slot idle that some
candidate could take; no slot could move from one tenant to another and raise the lower
share (weighted max-min); the store may hand it only the ``slots`` lowest-share tenants
(what the ``LIMIT`` in ``candidate_tenants`` relies on); and a bigger backlog buys nothing.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.config import UNLIMITED
from corral.dispatch import TenantLoad, allocate

WEIGHTS = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 10.0]


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
        out.append(TenantLoad(f"t{i:02d}", in_flight, cap, draw(st.sampled_from(WEIGHTS)), queued))
    return out


def limit(c: TenantLoad) -> int:
    return max(0, min(c.cap - c.in_flight, c.queued))


def share(c: TenantLoad, granted: int) -> float:
    return (c.in_flight + granted) / c.weight


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
def test_weighted_max_min_with_ties_to_the_earlier_candidate(
    candidates: list[TenantLoad], slots: int
) -> None:
    """Take any tenant i that got a slot and any tenant j that could have taken one more.
    i's last slot was granted at share ``(in_i + g_i - 1) / w_i``; it must not exceed j's
    final share (else j was lower then, and should have had it), and when equal, i must come
    first among the candidates (ties go to the least recently served)."""
    shares = allocate(candidates, slots)
    for i, a in enumerate(candidates):
        g_a = shares.get(a.tenant, 0)
        if g_a == 0:
            continue
        for j, b in enumerate(candidates):
            g_b = shares.get(b.tenant, 0)
            if j == i or g_b >= limit(b):
                continue
            last_a = share(a, g_a - 1)
            assert last_a <= share(b, g_b), (a, g_a, b, g_b)
            if last_a == share(b, g_b):
                assert i < j, (a, b)


@given(loads(feasible=True), st.integers(0, 64))
def test_only_the_slots_lowest_share_candidates_can_be_served(
    candidates: list[TenantLoad], slots: int
) -> None:
    """``candidate_tenants`` sorts by ``in_flight / weight`` and keeps ``LIMIT slots`` rows:
    the allocation must be the same as over every candidate."""
    ordered = sorted(candidates, key=lambda c: c.in_flight / c.weight)  # stable: ties keep order
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
            inflated[index] = TenantLoad(c.tenant, c.in_flight, c.cap, c.weight, c.queued + extra)
            assert allocate(inflated, slots) == shares


@settings(max_examples=200)
@given(st.lists(st.sampled_from(WEIGHTS), min_size=1, max_size=8), st.integers(1, 200))
def test_backlogged_tenants_from_empty_split_the_slots_by_weight(
    weights: list[float], slots: int
) -> None:
    """From nothing in flight with unbounded backlogs, tenant i gets ``slots * w_i / W``
    (``W`` the sum of weights) to within one slot above and ``n * w_i / W`` below (n
    tenants): slots are whole, and every tenant's first slot is granted at share 0, in
    candidate order, whatever its weight. With many slots per tenant the split is the
    weighted one; with fewer slots than tenants it is not (see test_dispatch_simulation)."""
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


def test_no_slot_to_a_tenant_at_its_cap_or_with_zero_weight() -> None:
    full = TenantLoad("full", in_flight=3, cap=3, weight=1.0, queued=10)
    zero = TenantLoad("zero", in_flight=0, cap=UNLIMITED, weight=0.0, queued=10)
    assert allocate([full, zero], 4) == {}
