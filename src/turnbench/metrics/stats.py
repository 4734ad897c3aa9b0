"""Distribution summaries from full data: exact percentiles, never averages of averages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from turnbench.metrics.model_base import Dist

PERCENTILES = (50, 90, 95, 99)


def describe(values: Sequence[float] | np.ndarray) -> Dist:
    """count, mean, p50, p90, p95, p99, min and max of the values; NaN values are left out."""
    data = np.asarray(values, dtype=np.float64)
    data = data[~np.isnan(data)]
    if not data.size:
        return Dist(0, None, None, None, None, None, None, None)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(data, PERCENTILES))
    return Dist(
        int(data.size), float(data.mean()), p50, p90, p95, p99, float(data.min()), float(data.max())
    )
