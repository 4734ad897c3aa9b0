"""The server's section of the summary (`server`), typed: what it said of itself in /metrics.

Why its own module: `metrics/server.py` builds these from the `server_metrics` rows and the
report reads them; the keys are those of docs/metrics.md, so summary.json's `server` is
unchanged. A figure the server does not export is None, never 0.
"""

from __future__ import annotations

from turnbench.metrics.model_base import Model


class Gauge(Model):
    """Mean and max of a gauge over the scrapes that have it."""

    mean: float
    max: float


class ServerSecond(Model):
    """One second of the run clock that holds a scrape (`t`: bin t holds [t, t + 1) s):
    gauges averaged over its scrapes, counter growth since the scrape before, hit rates."""

    t: int
    running: float | None
    waiting: float | None
    kv_usage: float | None
    prefix_hits: float | None
    prefix_queries: float | None
    prefix_hit_rate: float | None
    preemptions: float | None
    external_hits: float | None
    external_queries: float | None
    external_hit_rate: float | None


class Server(Model):
    """The server's figures over the whole run (warm-up included), from counter growth
    between the run's own scrapes and the gauges' values."""

    names: str | None
    """Whose names the rows carry (`vLLM`, `SGLang`...); None for none turnbench knows."""
    metrics: dict[str, str]
    """{role: the metric name read for it}."""
    scrapes: int
    interval_s: float | None
    first_s: float
    last_s: float
    rows_per_scrape: float
    running: Gauge | None
    waiting: Gauge | None
    kv_usage: Gauge | None
    prefix_hits: float | None
    prefix_queries: float | None
    prefix_hit_rate: float | None
    preemptions: float | None
    external_hits: float | None
    external_queries: float | None
    external_hit_rate: float | None
    per_second: list[ServerSecond]
