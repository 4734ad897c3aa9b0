"""Time series and distributions for plots, computed from `events.db` alone.

Why separate from the summary: the summary holds the numbers a user compares between runs;
these are the shapes a person looks at (throughput over time, latency CDFs, TTFT over time),
kept small: a point per second, and at most a few thousand samples.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

from turnbench.metrics.stats import percentile

MS = 1e6
MAX_POINTS = 4000
CDF_POINTS = 200


def _cdf(values: list[float]) -> list[tuple[float, float]]:
    """(value, fraction) pairs at evenly spaced quantiles of the sorted values."""
    data = sorted(values)
    if not data:
        return []
    n = min(CDF_POINTS, len(data))
    return [
        (percentile(data, 100 * i / (n - 1) if n > 1 else 100), i / max(n - 1, 1)) for i in range(n)
    ]


def series(db_path: Path) -> dict[str, Any]:
    """Per-second throughput, latency CDFs and TTFT samples over time (main stage only)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT t_sent_ns, t_intended_ns, t_first_token_ns, t_end_ns, completion_tokens,"
            " status, turn_index FROM requests WHERE stage != 'warmup' ORDER BY t_sent_ns"
        ).fetchall()
    finally:
        conn.close()
    per_second: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    ttft: list[float] = []
    ttft_i: list[float] = []
    e2e: list[float] = []
    e2e_i: list[float] = []
    samples: list[tuple[float, float, int]] = []
    for sent, intended, first, end, out, status, turn in rows:
        bucket = per_second[int(end // 1_000_000_000)]
        if status != "ok":
            bucket[1] += 1
            continue
        bucket[0] += 1
        bucket[2] += out or 0
        e2e.append((end - sent) / MS)
        e2e_i.append((end - intended) / MS)
        if first is not None:
            ttft.append((first - sent) / MS)
            ttft_i.append((first - intended) / MS)
            samples.append((sent / 1e9, (first - sent) / MS, turn))
    step = max(1, len(samples) // MAX_POINTS)
    seconds = sorted(per_second)
    return {
        "throughput": [
            {
                "t": s,
                "ok": per_second[s][0],
                "failed": per_second[s][1],
                "output_tokens": per_second[s][2],
            }
            for s in range(seconds[0], seconds[-1] + 1)
        ]
        if seconds
        else [],
        "cdf": {
            "ttft_ms": _cdf(ttft),
            "ttft_from_intended_ms": _cdf(ttft_i),
            "e2e_ms": _cdf(e2e),
            "e2e_from_intended_ms": _cdf(e2e_i),
        },
        "ttft_samples": samples[::step],
    }
