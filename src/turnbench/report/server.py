"""The report's "Server (from /metrics)" table: what the server said of itself during the run.

Why beside the client's tables: a TTFT that rose explains itself when the same report shows
the queue that grew, the KV cache that filled or the prefix cache that stopped hitting.
"""

from __future__ import annotations

from turnbench.metrics.model import Summary
from turnbench.metrics.server_model import Gauge
from turnbench.report.tables import TextTable, fmt

NOT_EXPORTED = "not exported"


def _pct(value: float | None) -> str:
    return fmt(value * 100 if value is not None else None)


def _gauge(figures: Gauge | None, percent: bool = False) -> str:
    """`mean / max` of a gauge, or that the server does not export it."""
    if figures is None:
        return NOT_EXPORTED
    scale = 100 if percent else 1
    return f"{fmt(figures.mean * scale)} / {fmt(figures.max * scale)}"


def _rate(rate: float | None, growth: float | None) -> str:
    """A hit rate, `-` when nothing was looked up, or that the server does not export it."""
    return NOT_EXPORTED if growth is None else _pct(rate)


def server_table(summary: Summary) -> TextTable | None:
    """The server's figures over the run; None when nothing was scraped (no such table)."""
    server = summary.server
    if not server:
        return None
    names = server.names or "names turnbench does not know"
    interval = server.interval_s
    every = f" every {fmt(interval, 2)} s" if interval is not None else ""
    preemptions = server.preemptions
    rows = [
        ["scrapes", f"{fmt(server.scrapes)}{every}"],
        [
            "prefix-cache hit rate % (hit / looked-up tokens)",
            _rate(server.prefix_hit_rate, server.prefix_queries),
        ],
        ["KV-cache usage % (mean / max)", _gauge(server.kv_usage, percent=True)],
        ["requests running (mean / max)", _gauge(server.running)],
        ["requests waiting (mean / max)", _gauge(server.waiting)],
        ["preemptions", NOT_EXPORTED if preemptions is None else fmt(preemptions, 0)],
    ]
    if server.external_hits is not None:
        rows.insert(
            2,
            [
                "external prefix-cache hit rate %",
                _rate(server.external_hit_rate, server.external_queries),
            ],
        )
    return TextTable(f"Server (from /metrics: {names})", None, rows)
