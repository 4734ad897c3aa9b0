"""Live progress while a run goes: elapsed, sessions, requests, throughput (rich, 4 Hz)."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from rich.console import Console
from rich.live import Live
from rich.text import Text


class Counters(Protocol):
    sessions_active: int
    sessions_done: int
    requests_ok: int
    requests_failed: int
    output_tokens: int


def _line(stats: Counters, elapsed: float, rps: float, tps: float) -> Text:
    return Text(
        f"{elapsed:7.1f} s | sessions active {stats.sessions_active:>5} done "
        f"{stats.sessions_done:>6} | requests ok {stats.requests_ok:>7} failed "
        f"{stats.requests_failed:>5} | {rps:8.1f} req/s {tps:10.1f} tok/s"
    )


async def show_progress(stats: Counters, console: Console, period_s: float = 0.25) -> None:
    """Refresh one status line until cancelled; rates over the last few seconds."""
    t0 = time.monotonic()
    history: list[tuple[float, int, int]] = [(t0, 0, 0)]
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while True:
            now = time.monotonic()
            history.append((now, stats.requests_ok, stats.output_tokens))
            while len(history) > 2 and now - history[0][0] > 5:
                history.pop(0)
            t_old, r_old, k_old = history[0]
            span = max(now - t_old, 1e-9)
            live.update(
                _line(
                    stats,
                    now - t0,
                    (stats.requests_ok - r_old) / span,
                    (stats.output_tokens - k_old) / span,
                )
            )
            await asyncio.sleep(period_s)
