"""The prefix cache in two figures: ideal against realised by turn, and kept over run time.

Why these two: by turn shows what the workload offers to cache and how much of it the server
kept; over run time shows when it stopped keeping it (the eviction cliff, marked).
"""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource
from bokeh.models.annotations import Span

from turnbench.metrics.cache import KEPT_THRESHOLD
from turnbench.metrics.cache_model import Cache
from turnbench.report.figures import (
    FAILED,
    MUTED,
    OK,
    TOKENS,
    finish_legend,
    hover,
    hover_steps,
    new_figure,
    unit_range,
    zero_based,
)


def cache_by_turn(cache: Cache | None) -> Any:
    """Mean prompt, ideal cached and realised cached tokens per turn; None without an ideal."""
    turns = cache.per_turn if cache else []
    if not turns:
        return None
    src = ColumnDataSource(
        {
            "turn": [t.turn for t in turns],
            "n": [t.requests for t in turns],
            "prompt": [t.mean_prompt_tokens for t in turns],
            "ideal": [t.mean_ideal_tokens for t in turns],
            "realised": [
                t.mean_realised_tokens if t.mean_realised_tokens is not None else float("nan")
                for t in turns
            ],
        }
    )
    p = new_figure("Cached tokens by turn: ideal against realised", "turn", "mean tokens")
    p.line("turn", "prompt", source=src, color=MUTED, line_dash="dotted", legend_label="prompt")
    ideal = p.line("turn", "ideal", source=src, color=OK, line_width=2, legend_label="ideal cached")
    p.scatter("turn", "ideal", source=src, color=OK, size=5, legend_label="ideal cached")
    p.line(
        "turn",
        "realised",
        source=src,
        color=TOKENS,
        line_width=2,
        line_dash="dashed",
        legend_label="realised cached",
    )
    p.scatter(
        "turn",
        "realised",
        source=src,
        color=TOKENS,
        marker="square",
        size=5,
        legend_label="realised cached",
    )
    zero_based(p)
    p.xaxis.ticker.min_interval = 1
    hover(
        p,
        [ideal],
        [
            ("turn", "@turn (@n requests)"),
            ("prompt", "@prompt{0,0}"),
            ("ideal", "@ideal{0,0}"),
            ("realised", "@realised{0,0}"),
        ],
        mode="vline",
    )
    finish_legend(p)
    return p


def cache_over_time(cache: Cache | None, x_range: Any) -> Any:
    """Σ realised / Σ ideal per time bin, the cliff threshold and the cliff itself; None
    without a bin that has a kept ratio (or without an ideal: no `over_time`)."""
    over_time = cache.over_time if cache else None
    if cache is None or over_time is None:
        return None
    width = over_time.bin_s
    bins = [(b.start_s, b.kept, b.requests) for b in over_time.bins if b.kept is not None]
    if not bins:
        return None
    src = ColumnDataSource(
        {
            "t": [start for start, _, _ in bins],
            "kept": [kept * 100 for _, kept, _ in bins],
            "n": [n for _, _, n in bins],
        }
    )
    p = new_figure(
        f"Prefix cache kept over time ({width:.1f} s bins)",
        "run time (s)",
        "kept % (realised / ideal)",
        height=240,
        x_range=x_range,
        y_range=unit_range(),
    )
    p.step("t", "kept", source=src, mode="after", color=TOKENS, line_width=2, legend_label="kept %")
    p.add_layout(
        Span(location=KEPT_THRESHOLD * 100, dimension="width", line_color=MUTED, line_dash="dotted")
    )
    if cache.cliff is not None:
        p.add_layout(
            Span(
                location=cache.cliff.time_s,
                dimension="height",
                line_color=FAILED,
                line_dash="dashed",
                line_width=2,
            )
        )
        p.title.text += f"; eviction cliff at {cache.cliff.time_s:.1f} s"
    hover_steps(
        p,
        src,
        "t",
        "kept",
        [("bin from", "@t{0.0} s"), ("kept", "@kept{0.0} %"), ("requests", "@n")],
    )
    finish_legend(p, "bottom_left")
    return p
