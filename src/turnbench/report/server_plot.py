"""The server's own metrics over time, on the same time axis as the client's plots.

Why the shared axis: "why did TTFT rise at 40 s?" is answered by what sits right below it — a
queue that grew, a KV cache that filled, a prefix cache that stopped hitting — and zooming one
plot zooms them all, with no lining up by eye.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from bokeh.models import ColumnDataSource

from turnbench.metrics.server_model import Server, ServerSecond
from turnbench.report.figures import (
    FAILED,
    PALETTE,
    Span,
    finish_legend,
    hover,
    new_figure,
    rebin,
    shade,
    unit_range,
    zero_based,
)

_KEYS = ("running", "waiting", "preemptions", "kv_usage", "prefix_hit_rate", "external_hit_rate")


def _columns(points: list[ServerSecond]) -> dict[str, Any]:
    t = np.array([p.t for p in points], dtype=float)
    cols = {k: np.array([getattr(p, k) for p in points], dtype=float) for k in _KEYS}
    for k in ("kv_usage", "prefix_hit_rate", "external_hit_rate"):
        cols[k] = cols[k] * 100
    return rebin(t, cols)


def server_queue(server: Server | None, spans: list[Span], x_range: Any) -> Any:
    """The server's running and waiting requests (and preemptions) per second."""
    points = server.per_second if server else []
    if not points:
        return None
    src = ColumnDataSource(_columns(points))
    p = new_figure(
        "Server: requests running and waiting",
        "run time (s)",
        "requests",
        height=240,
        x_range=x_range,
    )
    shade(p, spans)
    run = p.line("t", "running", source=src, color=PALETTE[0], line_width=2, legend_label="running")
    p.line("t", "waiting", source=src, color=PALETTE[1], line_width=2, legend_label="waiting")
    if any(q.preemptions for q in points):
        p.vbar(
            x="t",
            top="preemptions",
            width=0.8,
            source=src,
            color=FAILED,
            alpha=0.5,
            legend_label="preemptions",
        )
    zero_based(p)
    hover(
        p,
        [run],
        [
            ("t", "@t{0} s"),
            ("running", "@running{0.0}"),
            ("waiting", "@waiting{0.0}"),
            ("preemptions", "@preemptions{0}"),
        ],
        mode="vline",
    )
    finish_legend(p)
    return p


def server_cache(server: Server | None, spans: list[Span], x_range: Any) -> Any:
    """The server's KV-cache usage and prefix-cache hit rates per second, in %."""
    points = server.per_second if server else []
    if not points:
        return None
    cols = _columns(points)
    shown = [
        (k, label)
        for k, label in (
            ("kv_usage", "KV-cache usage %"),
            ("prefix_hit_rate", "prefix-cache hit rate %"),
            ("external_hit_rate", "external prefix-cache hit rate %"),
        )
        if not np.isnan(cols[k]).all()
    ]
    if not shown:
        return None
    src = ColumnDataSource(cols)
    p = new_figure(
        "Server: KV cache and prefix cache",
        "run time (s)",
        "%",
        height=240,
        x_range=x_range,
        y_range=unit_range(),
    )
    shade(p, spans)
    lines = [
        p.line("t", k, source=src, color=PALETTE[i + 2], line_width=2, legend_label=label)
        for i, (k, label) in enumerate(shown)
    ]
    zero_based(p)
    hover(
        p,
        lines[:1],
        [("t", "@t{0} s"), *((label, f"@{k}{{0.0}}") for k, label in shown)],
        mode="vline",
    )
    finish_legend(p, "bottom_left")
    return p
