"""The load score L(i), stated directly: the definition every faster structure must agree with.

    L(i) = alpha * Q_i / max_j Q_j + (1 - alpha) * Dmax_i / max_j Dmax_j

* ``Q_i``: summed weight of agent i's waiting requests (every weight is >= 1, so a waiting
  agent has ``Q_i >= 1`` and ``max Q >= 1``: the first term is always defined).
* ``Dmax_i = tick - a_i``: age of agent i's oldest waiting request, in ticks.
* Both maxima range over the agents that have waiting requests only; an idle agent (no
  waiting request) has no score and does not change anyone else's.

Edge cases, all deliberate:

* ``max Dmax == 0`` (every oldest request arrived at the current tick): the age term is 0 for
  everyone, so ``L(i) = alpha * Q_i / maxQ``.
* ``alpha == 0``: ``L(i) = Dmax_i / maxD`` -- oldest first; ties between requests of the same
  tick go to the earliest-arrived, so this is FIFO over the agents' oldest requests.
* ``alpha == 1``: ``L(i) = Q_i / maxQ`` -- the most loaded agent first. Nothing ages, so a
  light agent can starve while heavier ones keep arriving.
* Starvation in general: a light agent (load ``Q``) that keeps waiting beats an agent holding
  its queue at ``maxQ`` eventually iff ``Q / maxQ > (2*alpha - 1) / alpha``: always for
  ``alpha <= 0.5`` (aging wins), not necessarily above 0.5.
* Ties: the agent whose oldest waiting request arrived first (global arrival order ``seq``)
  wins, deterministically. With integer weights and a dyadic alpha (0.25, 0.5, ...) the
  comparisons are exact; with arbitrary floats "equal" means equal in floating point.

These functions are O(number of waiting agents). The scheduler uses the O(log n) structure
in :mod:`corral.contention.wait_queue`; a store-backed scheduler may use either.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from corral.errors import InvalidInput

DEFAULT_ALPHA = 0.25


class AgentLoad(NamedTuple):
    """What the score needs to know about one waiting agent."""

    agent_id: str
    load: float  #: Q_i, summed weight of waiting requests
    oldest_arrival: int  #: a_i, arrival tick of the oldest waiting request
    oldest_seq: int  #: global arrival order of that request (tie-break)


def check_alpha(alpha: float) -> float:
    """Validate ``alpha`` (a number in [0, 1]) and return it as a float."""
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise InvalidInput(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def check_weight(weight: float) -> float:
    """Validate a request weight (a finite number >= 1) and return it as a float."""
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 1.0:
        raise InvalidInput(f"weight must be a number >= 1, got {weight!r}")
    if weight == float("inf"):
        raise InvalidInput("weight must be finite")
    return float(weight)


def load_scores(loads: Iterable[AgentLoad], tick: int, alpha: float) -> dict[str, float]:
    """L(i) for every waiting agent, computed directly from the definition."""
    items = list(loads)
    if not items:
        return {}
    max_q = max(x.load for x in items)
    max_d = max(tick - x.oldest_arrival for x in items)
    scores: dict[str, float] = {}
    for x in items:
        age_term = (tick - x.oldest_arrival) / max_d if max_d > 0 else 0.0
        scores[x.agent_id] = alpha * x.load / max_q + (1.0 - alpha) * age_term
    return scores


def choose(loads: Iterable[AgentLoad], tick: int, alpha: float) -> str | None:
    """The agent that gets the next slot: highest L(i), earliest oldest request on a tie.

    Compares ``alpha*maxD*Q_i - (1-alpha)*maxQ*a_i`` (L(i) scaled by ``maxQ*maxD``), which
    orders agents exactly like L(i) and is exact for integer weights and dyadic alphas.
    """
    items = list(loads)
    if not items:
        return None
    max_q = max(x.load for x in items)
    oldest = min(x.oldest_arrival for x in items)
    max_d = tick - oldest
    if alpha == 0.0:
        u, w = 0.0, 1.0
    elif alpha == 1.0 or max_d == 0:
        u, w = 1.0, 0.0
    else:
        u, w = alpha * max_d, (1.0 - alpha) * max_q
    best = min(items, key=lambda x: (-(u * x.load - w * x.oldest_arrival), x.oldest_seq))
    return best.agent_id
