"""The server's metrics over time, under the client's TTFT, on one time axis (one PNG).

Why one figure with a shared axis: "why did TTFT rise at 40 s?" is answered by what sits
right below it — a queue that grew, a KV cache that filled, a prefix cache that stopped
hitting — with no lining up of separate plots by eye.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

from turnbench.report.plots import _SIZE, Span, _png, _shade


def _line(ax: Any, points: list[dict[str, Any]], key: str, label: str, scale: float = 1) -> bool:
    """Plot one per-second figure where it has values; False when it has none."""
    kept = [(p["t"], p[key] * scale) for p in points if p[key] is not None]
    if kept:
        ax.plot([t for t, _ in kept], [v for _, v in kept], label=label, marker=".", ms=3)
    return bool(kept)


def server_over_time(
    server: dict[str, Any] | None, ttft_samples: list[tuple[float, float, int]], spans: list[Span]
) -> bytes | None:
    """Client TTFT at send time, then the server's running and waiting requests, then its
    KV-cache usage and prefix-cache hit rate, per second of the run; None without scrapes."""
    points = (server or {}).get("per_second") or []
    if not points:
        return None
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(_SIZE[0], _SIZE[1] * 2), sharex=True)
    for ax in (top, mid, low):
        _shade(ax, spans)
    if ttft_samples:
        top.scatter(
            [s[0] for s in ttft_samples], [s[1] for s in ttft_samples], s=4, alpha=0.5, c="tab:blue"
        )
    top.set_ylabel("client TTFT (ms)")
    top.set_title("Client TTFT and the server's own metrics over time")
    _line(mid, points, "running", "running")
    _line(mid, points, "waiting", "waiting")
    if any(p["preemptions"] for p in points):
        mid.bar(
            [p["t"] + 0.5 for p in points],
            [p["preemptions"] or 0 for p in points],
            width=0.8,
            color="tab:red",
            alpha=0.5,
            label="preemptions",
        )
    mid.set_ylabel("requests")
    mid.set_ylim(bottom=0)
    mid.legend(loc="upper left", fontsize=8)
    shown = [
        _line(low, points, "kv_usage", "KV-cache usage %", 100),
        _line(low, points, "prefix_hit_rate", "prefix-cache hit rate %", 100),
        _line(low, points, "external_hit_rate", "external prefix-cache hit rate %", 100),
    ]
    if any(shown):
        low.legend(loc="upper left", fontsize=8)
    low.set_ylabel("%")
    low.set_ylim(0, 105)
    low.set_xlabel("run time (s)")
    low.set_xlim(left=0)
    return _png(fig)
