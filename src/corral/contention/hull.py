"""Upper-hull chains: the geometry behind choosing the highest load score quickly.

Why a hull
----------
The load score of a waiting agent ``i`` is (see :mod:`corral.contention.score`)::

    L(i) = alpha * Q_i / maxQ + (1 - alpha) * (tick - a_i) / maxD

where ``Q_i`` is the summed weight of its waiting requests and ``a_i`` the arrival tick of
its oldest one. ``maxQ``, ``maxD`` and ``tick`` are the same for every agent, so after
multiplying by ``maxQ * maxD > 0`` and dropping the common ``tick`` term, the winner is the
argmax of the linear function::

    u * Q_i - w * a_i        with  u = alpha * maxD,  w = (1 - alpha) * maxQ   (both >= 0)

over the points ``(a_i, Q_i)``. The argmax of a linear function with ``u, w >= 0`` is a
vertex of the *ascending upper hull* of the points: start at the oldest point (smallest
``a``; the heaviest one among equally old points), follow the upper convex hull to the right
and stop at the heaviest point (``maxQ``; the oldest among equally heavy points). Along that
chain ``a`` and ``Q`` strictly increase and the slopes ``dQ/da`` strictly decrease, so the
gain ``u*dQ - w*da`` of each step is decreasing and the argmax is found by binary search.
The two ends of the chain give ``maxQ`` (last point) and the oldest arrival ``min a`` (first
point), i.e. ``maxD = tick - min a``, for free.

Points are tuples ``(a, Q, seq, owner)``; ``seq`` is the global arrival order of the agent's
oldest request and decides exact ties (the earliest-arrived request wins). Chains are tuples
and are never mutated, so a merge may return one of its inputs unchanged; callers use
object identity to stop propagating an update early.

All comparisons are cross products of coordinate differences. With integer-valued weights
and ticks they are exact in binary floating point (below 2**53).
"""

from __future__ import annotations

from typing import Any

#: ``(arrival tick of the oldest waiting request, summed waiting weight, seq, owner)``
Point = tuple[int, float, int, Any]
Chain = tuple[Point, ...]

EMPTY: Chain = ()

#: below this many candidate points, merge() walks them instead of binary searching
_LINEAR = 8


def _turn(o: Point, p: Point, r: Point) -> float:
    """Cross product of ``p - o`` and ``r - o`` in ``(a, Q)``: > 0 when r is above ray o->p."""
    return (p[0] - o[0]) * (r[1] - o[1]) - (p[1] - o[1]) * (r[0] - o[0])


def _tangent(p: Point, chain: Chain, lo: int) -> int:
    """Index in ``chain[lo:]`` of the point of steepest slope seen from ``p``.

    ``p`` lies at or left of every chain point. Among collinear candidates the farthest is
    taken (the nearer one would be interior to a hull edge).
    """
    hi = len(chain) - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if _turn(p, chain[mid], chain[mid + 1]) >= 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


def merge(left: Chain, right: Chain) -> Chain:
    """The chain of the union of two point sets, every ``left`` point preceding every ``right`` one.

    "Preceding" means an earlier ``seq`` and so an arrival tick no later. Cost is
    O(log|left| * log|right|) comparisons plus the copy of the result (C speed); chains
    shorter than ``_LINEAR`` points in all are merged by a direct linear pass.
    """
    if not right:
        return left
    if not left:
        return right
    top = left[-1][1]
    if right[-1][1] <= top:
        # Every right point is no heavier than left's heaviest and no older: dominated.
        return left
    # First right point heavier than everything on the left; points before it are dominated.
    k_lo, k_hi = 0, len(right) - 1
    while k_lo < k_hi:
        mid = (k_lo + k_hi) >> 1
        if right[mid][1] <= top:
            k_lo = mid + 1
        else:
            k_hi = mid
    k = k_lo
    if len(left) + len(right) - k <= _LINEAR:
        # Short chains (the usual case): one monotone-chain pass beats the binary searches.
        out = list(left)
        for i in range(k, len(right)):
            p = right[i]
            while out and (
                out[-1][0] == p[0] or (len(out) >= 2 and _turn(out[-2], out[-1], p) >= 0)
            ):
                out.pop()
            out.append(p)
        return tuple(out)
    # Bridge: the left end i is the first vertex whose successor lies on or below the line
    # from it to its tangent point on the right chain (a monotone predicate in i).
    lo, hi = 0, len(left) - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        t = right[_tangent(left[mid], right, k)]
        if _turn(left[mid], left[mid + 1], t) >= 0:
            hi = mid
        else:
            lo = mid + 1
    j = _tangent(left[lo], right, k)
    if left[lo][0] == right[j][0]:
        # Same tick and the right point is heavier: the left point is dominated. This can
        # only happen when every left point shares that tick (then lo == 0).
        return right[j:]
    return left[: lo + 1] + right[j:]


def argmax_index(chain: Chain, u: float, w: float) -> int:
    """Index of the chain vertex maximising ``u*Q - w*a``; on a tie the older vertex.

    Requires ``u > 0`` and ``w > 0``; the edge cases are handled by the caller.
    """
    lo, hi = 0, len(chain) - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        p = chain[mid]
        n = chain[mid + 1]
        if u * (n[1] - p[1]) - w * (n[0] - p[0]) > 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


def build(points: list[Point]) -> Chain:
    """The chain of points given in ``seq`` order (linear time; for rebuilds and tests)."""
    out: list[Point] = []
    for p in points:
        if out and p[1] <= out[-1][1]:
            continue  # no heavier than the heaviest so far, and no older: dominated
        while out and (out[-1][0] == p[0] or (len(out) >= 2 and _turn(out[-2], out[-1], p) >= 0)):
            out.pop()
        out.append(p)
    return tuple(out)
