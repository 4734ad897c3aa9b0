"""Live progress while a run goes: elapsed, sessions, requests, throughput and the TTFT
percentiles of the last few seconds (rich, 4 Hz)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.text import Text

WINDOW_S = 5.0
"""Rates and percentiles are over the last five seconds."""


class Histograms(Protocol):
    def take(self) -> Any:
        """An HdrHistogram of what was recorded since the last take (microseconds)."""
        ...


class Counters(Protocol):
    sessions_active: int
    sessions_done: int
    requests_ok: int
    requests_failed: int
    output_tokens: int

    @property
    def ttft(self) -> Histograms:
        """The TTFTs of the successes since the last take."""
        ...


def _ms(hist: Any, percentile: float) -> str:
    return f"{hist.get_value_at_percentile(percentile) / 1000:7.0f}"


def _line(stats: Counters, elapsed: float, rps: float, tps: float, ttft: Any | None) -> Text:
    """The status line; `ttft` is the window's merged histogram (None: no success in it)."""
    latency = (
        f" | TTFT p50 {_ms(ttft, 50)} p90 {_ms(ttft, 90)} ms"
        if ttft is not None
        else " | TTFT p50       - p90       - ms"
    )
    return Text(
        f"{elapsed:7.1f} s | sessions active {stats.sessions_active:>5} done "
        f"{stats.sessions_done:>6} | requests ok {stats.requests_ok:>7} failed "
        f"{stats.requests_failed:>5} | {rps:8.1f} req/s {tps:10.1f} tok/s{latency}"
    )


def merged(window: Iterable[tuple[float, Any]]) -> Any | None:
    """The sum of the window's interval histograms, or None when they hold nothing."""
    merged = None
    for _, hist in window:
        if hist.get_total_count() == 0:
            continue
        if merged is None:
            merged = type(hist)(
                hist.lowest_trackable_value,
                hist.highest_trackable_value,
                hist.significant_figures,
            )
        merged.add(hist)
    return merged


async def show_progress(stats: Counters, console: Console, period_s: float = 0.25) -> None:
    """Refresh one status line until cancelled; rates and TTFT percentiles over the last
    `WINDOW_S` seconds (the histograms of the intervals in that window, added)."""
    t0 = time.monotonic()
    history: list[tuple[float, int, int]] = [(t0, 0, 0)]
    window: deque[tuple[float, Any]] = deque()
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while True:
            now = time.monotonic()
            history.append((now, stats.requests_ok, stats.output_tokens))
            while len(history) > 2 and now - history[0][0] > WINDOW_S:
                history.pop(0)
            window.append((now, stats.ttft.take()))
            while now - window[0][0] > WINDOW_S:
                window.popleft()
            t_old, r_old, k_old = history[0]
            span = max(now - t_old, 1e-9)
            live.update(
                _line(
                    stats,
                    now - t0,
                    (stats.requests_ok - r_old) / span,
                    (stats.output_tokens - k_old) / span,
                    merged(window),
                )
            )
            await asyncio.sleep(period_s)
