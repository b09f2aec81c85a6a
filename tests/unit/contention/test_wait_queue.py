"""The pure wait queue and hull chains against the definition of L(i), exact fractions."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.contention.hull import build, merge
from corral.contention.score import AgentLoad, choose, load_scores
from corral.contention.wait_queue import Request, WaitQueue
from corral.errors import InvalidInput


def exact_choice(live: list[Request], tick: int, alpha: Fraction) -> Request:
    """Brute force from the definition: argmax L(i), ties to the earliest oldest request."""
    load: dict[str, Fraction] = {}
    oldest: dict[str, Request] = {}
    for r in live:
        load[r.agent_id] = load.get(r.agent_id, Fraction(0)) + Fraction(r.weight)
        if r.agent_id not in oldest or r.seq < oldest[r.agent_id].seq:
            oldest[r.agent_id] = r
    max_q = max(load.values())
    max_d = max(tick - o.arrival for o in oldest.values())

    def score(a: str) -> Fraction:
        age = Fraction(tick - oldest[a].arrival, max_d) if max_d else Fraction(0)
        return alpha * load[a] / max_q + (1 - alpha) * age

    top = max(score(a) for a in load)
    return min((oldest[a] for a in load if score(a) == top), key=lambda r: r.seq)


# Few agents, few weights and few ticks make exact ties frequent.
queue_ops = st.lists(
    st.tuples(st.sampled_from("ppppprrrtbb"), st.integers(0, 7), st.integers(1, 3)),
    min_size=1,
    max_size=150,
)


@settings(max_examples=300, deadline=None)
@given(alpha=st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.75, 0.875, 1.0]), ops=queue_ops)
def test_best_is_the_argmax_of_the_load_score(
    alpha: float, ops: list[tuple[str, int, int]]
) -> None:
    q = WaitQueue(alpha)
    live: list[Request] = []
    for kind, x, w in ops:
        if kind == "p" or not live:
            live.append(q.push(f"a{x}", float(w)))
        elif kind == "r":
            assert q.remove(live.pop(x % len(live)))
        elif kind == "t":
            q.advance(x % 3)
        else:
            got = q.best()
            want = exact_choice(live, q.tick, Fraction(alpha))
            assert got is want
            assert choose(q.loads(), q.tick, alpha) == want.agent_id
            assert q.remove(got) and not q.remove(got)
            live.remove(got)
            q.advance()
        assert len(q) == len(live)
        counts: dict[str, int] = {}
        for r in live:
            counts[r.agent_id] = counts.get(r.agent_id, 0) + 1
        assert q.waiting_by_agent() == counts  # no state for agents without waiters
        assert list(q.requests()) == sorted(live, key=lambda r: r.seq)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 9)), min_size=1, max_size=40),
    st.data(),
)
def test_merging_chains_in_any_split_equals_building_from_scratch(
    steps: list[tuple[int, int]], data: st.DataObject
) -> None:
    points = []
    tick = 0
    for seq, (gap, load) in enumerate(steps):
        tick += gap
        points.append((tick, float(load), seq, seq))

    def chain_of(lo: int, hi: int) -> tuple[tuple[int, float, int, int], ...]:
        if hi - lo == 1:
            return (points[lo],)
        mid = data.draw(st.integers(lo + 1, hi - 1))
        return merge(chain_of(lo, mid), chain_of(mid, hi))

    assert chain_of(0, len(points)) == build(points)


def test_the_tree_is_rebuilt_as_slots_run_out_and_keeps_its_answers() -> None:
    q = WaitQueue(0.5)
    stuck = q.push("old", 1.0)  # stays while thousands pass through
    for i in range(5000):
        r = q.push(f"a{i % 7}", 1.0 + i % 3)
        q.advance()
        best = q.best()
        assert best is not None
        if best is not stuck:
            q.remove(best)
        q.remove(r)
    assert list(q.requests()) == [stuck]
    assert q.best() is stuck


def test_edge_cases_of_the_score() -> None:
    # All oldest requests arrived at this tick: the age term is 0, the load decides.
    loads = [AgentLoad("a", 1.0, 5, 0), AgentLoad("b", 3.0, 5, 1)]
    assert load_scores(loads, 5, 0.25) == {"a": 0.25 / 3, "b": 0.25}
    assert choose(loads, 5, 0.25) == "b"
    # alpha = 0: the oldest; alpha = 1: the heaviest; ties: the earliest request.
    loads = [AgentLoad("a", 1.0, 1, 0), AgentLoad("b", 3.0, 2, 1)]
    assert choose(loads, 4, 0.0) == "a"
    assert choose(loads, 4, 1.0) == "b"
    tied = [AgentLoad("late", 2.0, 3, 7), AgentLoad("early", 2.0, 3, 2)]
    assert choose(tied, 3, 0.5) == "early"
    assert choose([], 0, 0.5) is None
    assert load_scores([], 0, 0.5) == {}


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "0.5", True, float("nan")])
def test_bad_alpha_is_invalid_input(alpha: object) -> None:
    with pytest.raises(InvalidInput):
        WaitQueue(alpha)  # type: ignore[arg-type]


def test_an_exact_tie_between_two_hull_vertices_goes_to_the_older_request() -> None:
    # alpha 0.5 at tick 3: L(A) = 0.5*1/3 + 0.5*3/3 = 2/3 and L(B) = 0.5*3/3 + 0.5*1/3 = 2/3.
    q = WaitQueue(0.5)
    a = q.push("A", 1.0)
    q.advance(2)
    q.push("B", 3.0)
    q.advance(1)
    assert load_scores(q.loads(), q.tick, 0.5) == {"A": 2 / 3, "B": 2 / 3}
    assert q.best() is a


@settings(max_examples=100, deadline=None)
@given(st.integers(10, 60), st.data())
def test_long_chains_take_the_bridge_search_and_agree_with_a_linear_build(
    n: int, data: st.DataObject
) -> None:
    # Points on a concave parabola are all on the hull: long chains, bridge search path.
    points = [(i, float(i * (2 * n - i) + 1), i, i) for i in range(n)]
    assert len(build(points)) == n

    def chain_of(lo: int, hi: int) -> tuple[tuple[int, float, int, int], ...]:
        if hi - lo == 1:
            return (points[lo],)
        mid = data.draw(st.integers(lo + 1, hi - 1))
        return merge(chain_of(lo, mid), chain_of(mid, hi))

    assert chain_of(0, n) == build(points)
    # With some points pushed under the hull, merging still agrees.
    bent = [(a, q - (5.0 if a % 3 == 0 else 0.0), s, o) for a, q, s, o in points]
    mid = data.draw(st.integers(1, n - 1))
    assert merge(build(bent[:mid]), build(bent[mid:])) == build(bent)


def serve_until(q: WaitQueue, light: Request, heavy: str, weight: float, rounds: int) -> int:
    """Serve one request per tick while ``heavy`` keeps 5 waiting; return the light's turn."""
    for turn in range(1, rounds + 1):
        best = q.best()
        assert best is not None
        q.remove(best)
        q.advance()
        if best is light:
            return turn
        q.push(heavy, weight)  # the heavy agent tops its queue up again
    return -1


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5])
def test_aging_serves_a_light_agent_behind_a_heavy_stream_when_alpha_at_most_half(
    alpha: float,
) -> None:
    q = WaitQueue(alpha)
    for _ in range(5):
        q.push("heavy", 3.0)
    light = q.push("light", 1.0)
    assert serve_until(q, light, "heavy", 3.0, 100) > 0


def test_above_one_half_a_heavy_stream_can_starve_a_light_agent() -> None:
    # Documented edge: the light agent eventually wins only if Q_light/maxQ > (2a-1)/a.
    # Here 1/15 < 2/3 for alpha 0.75: it never does.
    q = WaitQueue(0.75)
    for _ in range(5):
        q.push("heavy", 3.0)
    light = q.push("light", 1.0)
    assert serve_until(q, light, "heavy", 3.0, 1000) == -1
