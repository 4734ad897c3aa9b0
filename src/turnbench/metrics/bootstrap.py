"""Bootstrap replicates of percentiles, so two runs' difference can be told from run-to-run noise.

Why replicates and not a fixed threshold: a 5 % change in TTFT p99 is noise for a run of 200
requests and a real regression for one of 200,000; the bootstrap says which from the runs' own
spread. The rule that reads the replicates (`difference_interval`, `within_noise`) is in
docs/compare.md.

Why no resampling loop for one value per request (TTFT, E2E, TPOT): a resample of n values with
replacement is F⁻¹(U₁..Uₙ), F⁻¹ the data's empirical quantile function and Uᵢ uniform, and F⁻¹
is monotone, so the resample's k-th smallest value is F⁻¹(U₍ₖ₎), U₍ₖ₎ ~ Beta(k, n − k + 1).
Drawing that order statistic (and the next one, for numpy's linear interpolation) is the same
bootstrap as sorting a million resampled values, at the cost of one sort of the data: no cap on
the resample size is needed, every request counts.

Why ITL is resampled by request: the chunk gaps of one request are not independent (a slow
request has slow gaps throughout), so resampling gaps one by one would understate the noise.
Each replicate draws m requests with replacement and takes all their gaps, on at most
`MAX_CLUSTER_VALUES` gaps of m whole requests drawn at random from the run's n, its spread
scaled by √(m / n) (the m-out-of-n bootstrap): a run of ten million gaps costs what one of
fifty thousand does.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

RESAMPLES = 1000
"""Bootstrap replicates per figure and run."""
CONFIDENCE = 0.95
"""Level of every interval."""
MAX_CLUSTER_VALUES = 50_000
"""Gaps kept for an ITL bootstrap; beyond it, a random subset of whole requests."""
MIN_VALUES = 2
"""Fewer values than this give no interval: one value says nothing of the spread."""
_CHUNK = 20
"""Replicates of the clustered bootstrap computed at once (memory: chunk × kept gaps)."""


def rng_for(*parts: object) -> np.random.Generator:
    """A generator seeded from names (run index, figure): the same runs compare the same way
    every time, and no two figures share their draws."""
    return np.random.default_rng([zlib.crc32(str(p).encode()) for p in parts])


def _quantile_positions(n: int, percentiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """numpy's `linear` percentile of n sorted values: lower order statistic (0-based) and the
    weight of the next one."""
    h = (n - 1) * np.asarray(percentiles, dtype=np.float64) / 100.0
    lower = np.floor(h).astype(np.int64)
    return lower, h - lower


def replicates(
    values: np.ndarray, percentiles: Sequence[float], rng: np.random.Generator
) -> np.ndarray | None:
    """`RESAMPLES` bootstrap replicates of each percentile of `values` (NaN left out), shape
    (len(percentiles), RESAMPLES); None with fewer than `MIN_VALUES` values.

    Exactly the bootstrap of resampling all n values with replacement (module docstring)."""
    data = np.sort(values[~np.isnan(values)])
    n = data.size
    if n < MIN_VALUES:
        return None
    lower, frac = _quantile_positions(n, percentiles)
    k = lower[:, None] + 1  # 1-based rank of the lower order statistic
    size = (len(lower), RESAMPLES)
    u_low = rng.beta(k, n - k + 1, size=size)
    # the next order statistic: the smallest of the n - k uniforms above u_low
    after = np.maximum(n - k, 1)
    u_high = u_low + (1.0 - u_low) * rng.beta(1, after, size=size)
    low = data[np.minimum((u_low * n).astype(np.int64), n - 1)]
    high = data[np.minimum((u_high * n).astype(np.int64), n - 1)]
    return low + frac[:, None] * (high - low)


def _weighted_percentiles(
    cum: np.ndarray, data: np.ndarray, percentiles: Sequence[float]
) -> np.ndarray:
    """Per row of cumulative integer weights over sorted `data`: the smallest value whose
    cumulative weight reaches p % of the row's total. Shape (len(percentiles), rows)."""
    share = np.asarray(percentiles, dtype=np.float64)[:, None] / 100.0
    targets = np.maximum(np.ceil(cum[:, -1] * share), 1).astype(cum.dtype)
    # one search per row, in the rows' own dtype (a float target would convert the whole row)
    idx = np.array([np.searchsorted(row, t) for row, t in zip(cum, targets.T, strict=True)])
    return data[np.minimum(idx.T, data.size - 1)]


def clustered_replicates(
    values: np.ndarray,
    owners: np.ndarray,
    clusters: int,
    percentiles: Sequence[float],
    rng: np.random.Generator,
) -> np.ndarray | None:
    """Bootstrap replicates of each percentile of `values` whose owners (0..m-1, m of the run's
    `clusters` requests, already a random subset when the run had more gaps than
    `MAX_CLUSTER_VALUES`) are resampled as wholes, centred on the unit-weight percentile and
    scaled by √(m / clusters); shape (len(percentiles), RESAMPLES), None without 2 requests.

    The caller adds the full data's percentile: replicate = estimate + scaled deviation."""
    kept = ~np.isnan(values)
    values, owners = values[kept], owners[kept]
    _, owners = np.unique(owners, return_inverse=True)
    m = int(owners.max()) + 1 if owners.size else 0
    if m < MIN_VALUES:
        return None
    order = np.argsort(values, kind="stable")
    data, owner = values[order], owners[order]
    ones = np.arange(1, data.size + 1, dtype=np.int32)[None, :]
    centre = _weighted_percentiles(ones, data, percentiles)
    parts = []
    for start in range(0, RESAMPLES, _CHUNK):
        draws = rng.multinomial(m, np.full(m, 1.0 / m), size=min(_CHUNK, RESAMPLES - start))
        # how often each gap's request was drawn, summed in sorted order (int32: 3x faster)
        cum = np.cumsum(draws[:, owner], axis=1, dtype=np.int32)
        parts.append(_weighted_percentiles(cum, data, percentiles))
    scale = np.sqrt(m / max(clusters, m))
    return (np.concatenate(parts, axis=1) - centre) * scale


def interval(reps: np.ndarray) -> tuple[float, float]:
    """The central `CONFIDENCE` interval of one figure's replicates."""
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(reps, (tail, 100 - tail))
    return float(low), float(high)


def difference_interval(base: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Interval of `other − base` from independent replicates of each run (the runs share no
    request, so pairing replicate i of one with replicate i of the other is a fair draw)."""
    return interval(other - base)


def within_noise(base: np.ndarray | None, other: np.ndarray | None) -> bool | None:
    """Whether the interval of the difference contains 0 (so the runs may not differ at all);
    None when either run has too few values to say."""
    if base is None or other is None:
        return None
    low, high = difference_interval(base, other)
    return bool(low <= 0.0 <= high)
