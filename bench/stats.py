"""Percentiles for the benchmarks' tables: one definition for every benchmark, so that a p99
in one README means what it means in the others."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (``p`` in [0, 100]) of ``values``, interpolating linearly
    between the two nearest ranks (numpy's default, and ``statistics.quantiles`` with
    ``method="inclusive"``); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
