"""Time series and distributions for plots, computed from `events.db` alone.

Why separate from the summary: the summary holds the numbers a user compares between runs;
these are the shapes a person looks at (throughput over time, latency CDFs, TTFT over time),
kept small: a point per second, a few hundred CDF points, at most a few thousand samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from turnbench.metrics.columns import read_matrix
from turnbench.metrics.summary import MAIN, MS
from turnbench.record.journal import open_readonly

MAX_POINTS = 4000
CDF_POINTS = 200


def _cdf(values: np.ndarray) -> list[tuple[float, float]]:
    """(value, fraction) pairs at evenly spaced quantiles."""
    data = values[~np.isnan(values)]
    if not data.size:
        return []
    fractions = np.linspace(0.0, 1.0, min(CDF_POINTS, data.size))
    return list(zip(np.percentile(data, fractions * 100).tolist(), fractions.tolist(), strict=True))


def series(db_path: Path) -> dict[str, Any]:
    """Per-second throughput, latency CDFs and TTFT samples over time (main stage only)."""
    conn = open_readonly(db_path)
    try:
        rows = read_matrix(
            conn,
            "SELECT t_sent_ns, t_intended_ns, t_first_token_ns, t_end_ns, completion_tokens,"
            f" status = 'ok', turn_index FROM requests WHERE {MAIN} ORDER BY t_sent_ns",
            7,
        )
    finally:
        conn.close()
    sent, intended, first, end, out, ok, turn = rows.T
    ok = ok == 1
    second = (end // 1e9).astype(np.int64)
    throughput = []
    if second.size:
        lo = int(second.min())
        n = int(second.max()) - lo + 1
        ok_s = np.bincount(second[ok] - lo, minlength=n)
        failed_s = np.bincount(second[~ok] - lo, minlength=n)
        tokens_s = np.bincount(second[ok] - lo, weights=np.nan_to_num(out[ok]), minlength=n)
        throughput = [
            {
                "t": lo + i,
                "ok": int(ok_s[i]),
                "failed": int(failed_s[i]),
                "output_tokens": int(tokens_s[i]),
            }
            for i in range(n)
        ]
    has_first = ok & ~np.isnan(first)
    step = max(1, int(has_first.sum()) // MAX_POINTS)
    samples = list(
        zip(
            (sent[has_first] / 1e9)[::step].tolist(),
            ((first - sent)[has_first] / MS)[::step].tolist(),
            turn[has_first][::step].astype(int).tolist(),
            strict=True,
        )
    )
    return {
        "throughput": throughput,
        "cdf": {
            "ttft_ms": _cdf((first - sent)[ok] / MS),
            "ttft_from_intended_ms": _cdf((first - intended)[ok] / MS),
            "e2e_ms": _cdf((end - sent)[ok] / MS),
            "e2e_from_intended_ms": _cdf((end - intended)[ok] / MS),
        },
        "ttft_samples": samples,
    }
