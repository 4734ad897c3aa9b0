"""Distribution summaries from full data: exact percentiles, never averages of averages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def describe(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """count, mean, p50, p90, p95, p99, min and max of the values; NaN values are left out."""
    data = np.asarray(values, dtype=np.float64)
    data = data[~np.isnan(data)]
    if not data.size:
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
    out: dict[str, float | int | None] = {"count": int(data.size), "mean": float(data.mean())}
    for p, value in zip(PERCENTILES, np.percentile(data, PERCENTILES), strict=True):
        out[f"p{p}"] = float(value)
    out["min"] = float(data.min())
    out["max"] = float(data.max())
    return out
