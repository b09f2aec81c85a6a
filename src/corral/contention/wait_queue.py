"""The wait queue of one resource: who is waiting, and who is served next. Pure, no I/O.

Design
------
Each queued request gets a *slot* in arrival order. A slot is a leaf of a segment tree; the
leaf of request r holds a point iff r is the oldest waiting request of its agent, and the
point is ``(a_i, Q_i, seq, agent)`` (see :mod:`corral.contention.hull`). Leaves are in arrival
order, so the points are sorted by arrival tick, and every inner node stores the ascending
upper-hull chain of the points below it, merged from its two children by a bridge search
(O(log^2 h), h = chain length) -- an Overmars-van Leeuwen style hull tree in which each node
keeps its whole chain as an immutable tuple instead of a concatenable queue: the chains are
short (only agents that are both older and heavier than every fresher agent can be on one),
and a C-speed tuple copy beats a Python-level balanced tree at these sizes.

* Choosing (``best``): binary search on the root chain for the direction set by alpha,
  maxQ (the chain's last point) and maxD (``tick`` minus its first point's arrival):
  O(log h). No sort, no walk over requests or agents.
* An arrival, a grant or a withdrawal changes one agent's point: at most two leaves, and
  each leaf change re-merges its O(log R) ancestors (R = queued requests), stopping early
  as soon as a node comes out unchanged (the usual case for a new, fresh agent).
* Slots are never reused; when they run out the tree is rebuilt over the live requests with
  room for three times as many more (amortised O(1) merges per request). Memory is O(R).
* Aging costs nothing: a request's age is ``tick - arrival`` and ``advance`` only bumps
  ``tick``.

Per-agent state exists only while the agent has a waiting request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from corral.contention.hull import EMPTY, Chain, Point, argmax_index, merge
from corral.contention.score import DEFAULT_ALPHA, AgentLoad, check_alpha

_MIN_CAP = 32


class Request:
    """One acquire waiting (or once waiting) for a slot: agent, weight and arrival tick."""

    __slots__ = ("agent_id", "arrival", "owner", "seq", "slot", "waiting", "weight")

    def __init__(
        self, agent_id: str, weight: float, arrival: int, seq: int, slot: int, owner: Any
    ) -> None:
        self.agent_id = agent_id
        self.weight = weight
        self.arrival = arrival  #: tick at which the request arrived
        self.seq = seq  #: global arrival order; ties go to the lowest
        self.slot = slot  #: leaf index in the queue's tree (-1: never queued)
        self.owner = owner  #: whatever the caller attached (the scheduler puts its handle here)
        self.waiting = slot >= 0

    def __repr__(self) -> str:
        state = "waiting" if self.waiting else "done"
        return (
            f"Request(agent_id={self.agent_id!r}, weight={self.weight}, "
            f"arrival={self.arrival}, seq={self.seq}, {state})"
        )


class _Line:
    """One agent's waiting requests, oldest first (dead ones dropped lazily from the left)."""

    __slots__ = ("agent_id", "live", "load", "requests")

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.requests: deque[Request] = deque()
        self.live = 0
        self.load = 0.0


class WaitQueue:
    """Requests waiting for one resource, with the load-score choice of the next one to serve."""

    __slots__ = (
        "_cap",
        "_chains",
        "_count",
        "_firsts",
        "_lines",
        "_next",
        "_seq",
        "_slots",
        "alpha",
        "tick",
    )

    def __init__(self, alpha: float = DEFAULT_ALPHA, *, tick: int = 0) -> None:
        self.alpha = check_alpha(alpha)
        self.tick = tick  #: logical clock: +1 per release of the resource
        self._seq = 0
        self._lines: dict[str, _Line] = {}
        self._count = 0
        self._alloc(_MIN_CAP)

    def _alloc(self, cap: int) -> None:
        self._cap = cap
        self._chains: list[Chain] = [EMPTY] * (2 * cap)
        self._firsts: list[Point | None] = [None] * (2 * cap)
        self._slots: list[Request | None] = [None] * cap
        self._next = 0

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def waiting_by_agent(self) -> dict[str, int]:
        """Number of waiting requests per waiting agent."""
        return {a: line.live for a, line in self._lines.items()}

    def loads(self) -> list[AgentLoad]:
        """Q_i and oldest arrival of every waiting agent (for introspection and checks)."""
        out = []
        for line in self._lines.values():
            head = line.requests[0]
            out.append(AgentLoad(line.agent_id, line.load, head.arrival, head.seq))
        return out

    def requests(self) -> Iterator[Request]:
        """Waiting requests in arrival order."""
        for r in self._slots[: self._next]:
            if r is not None:
                yield r

    def next_seq(self) -> int:
        """Take an arrival number for a request that is served without waiting."""
        seq = self._seq
        self._seq = seq + 1
        return seq

    def best(self) -> Request | None:
        """The request to serve next (it stays queued until :meth:`remove`)."""
        if not self._count:
            return None
        alpha = self.alpha
        if alpha == 0.0:
            first = self._firsts[1]
            assert first is not None
            line: _Line = first[3]
            return line.requests[0]
        chain = self._chains[1]
        last = chain[-1]
        max_d = self.tick - chain[0][0]
        if alpha == 1.0 or max_d == 0 or len(chain) == 1:
            line = last[3]
        else:
            line = chain[argmax_index(chain, alpha * max_d, (1.0 - alpha) * last[1])][3]
        return line.requests[0]

    # -- changing ------------------------------------------------------------------------

    def advance(self, ticks: int = 1) -> None:
        """Move the logical clock: every waiting request ages by ``ticks``."""
        self.tick += ticks

    def push(self, agent_id: str, weight: float, owner: Any = None) -> Request:
        """Queue a request (``weight`` must already be validated, >= 1) arriving now."""
        if self._next == self._cap:
            self._rebuild()
        slot = self._next
        self._next = slot + 1
        seq = self._seq
        self._seq = seq + 1
        req = Request(agent_id, weight, self.tick, seq, slot, owner)
        self._slots[slot] = req
        self._count += 1
        line = self._lines.get(agent_id)
        if line is None:
            line = self._lines[agent_id] = _Line(agent_id)
        line.requests.append(req)
        line.live += 1
        line.load += weight
        head = line.requests[0]
        self._set_leaf(head.slot, (head.arrival, line.load, head.seq, line))
        return req

    def remove(self, req: Request) -> bool:
        """Take a request out (served, cancelled, timed out). False if it was not waiting."""
        if not req.waiting:
            return False
        req.waiting = False
        self._slots[req.slot] = None
        self._count -= 1
        line = self._lines[req.agent_id]
        line.live -= 1
        if line.live == 0:
            del self._lines[req.agent_id]
            self._set_leaf(req.slot, None)
            return True
        line.load -= req.weight
        requests = line.requests
        if requests[0] is req:
            requests.popleft()
            while not requests[0].waiting:
                requests.popleft()
            self._set_leaf(req.slot, None)
        head = requests[0]
        self._set_leaf(head.slot, (head.arrival, line.load, head.seq, line))
        return True

    def _set_leaf(self, slot: int, point: Point | None) -> None:
        chains = self._chains
        node = self._cap + slot
        chains[node] = (point,) if point is not None else EMPTY
        if self.alpha == 0.0:
            self._set_first(node, point)
            return
        node >>= 1
        while node:
            left = chains[node << 1]
            right = chains[(node << 1) + 1]
            # merge()'s trivial cases inline: this loop is the hot path of every update
            if not right:
                chain = left
            elif not left:
                chain = right
            elif right[-1][1] <= left[-1][1]:
                chain = left
            else:
                chain = merge(left, right)
            if chain is chains[node]:
                return  # nothing above can change
            chains[node] = chain
            node >>= 1

    def _set_first(self, node: int, point: Point | None) -> None:
        """alpha == 0 needs only the earliest waiting head: keep that instead of chains."""
        firsts = self._firsts
        firsts[node] = point
        node >>= 1
        while node:
            first = firsts[node << 1]
            if first is None:
                first = firsts[(node << 1) + 1]
            if first is firsts[node]:
                return
            firsts[node] = first
            node >>= 1

    def _rebuild(self) -> None:
        """Re-slot the live requests compactly into a tree with room for 3x as many more."""
        live = [r for r in self._slots[: self._next] if r is not None]
        cap = _MIN_CAP
        while cap < 4 * (len(live) + 1):  # at least 3/4 of the slots free: rare rebuilds
            cap <<= 1
        self._alloc(cap)
        for i, r in enumerate(live):
            r.slot = i
            self._slots[i] = r
        self._next = len(live)
        chains = self._chains
        firsts = self._firsts
        for line in self._lines.values():
            head = line.requests[0]
            point = (head.arrival, line.load, head.seq, line)
            chains[cap + head.slot] = (point,)
            firsts[cap + head.slot] = point
        fifo = self.alpha == 0.0
        for node in range(cap - 1, 0, -1):
            left = node << 1
            if fifo:
                f = firsts[left]
                firsts[node] = f if f is not None else firsts[left + 1]
            else:
                chains[node] = merge(chains[left], chains[left + 1])
