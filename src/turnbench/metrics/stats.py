"""Distribution summaries from full data: exact percentiles, never averages of averages."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile with linear interpolation between closest ranks (numpy's default)."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = (n - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def describe(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p90, p95, p99, min and max of the values (None when empty)."""
    data = sorted(values)
    if not data:
        return {
            "count": 0,
            "mean": None,
            "p50": None,
            "p90": None,
            "p95": None,
            "p99": None,
            "min": None,
            "max": None,
        }
    out: dict[str, float | int | None] = {"count": len(data), "mean": math.fsum(data) / len(data)}
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(data, p)
    out["min"] = data[0]
    out["max"] = data[-1]
    return out
