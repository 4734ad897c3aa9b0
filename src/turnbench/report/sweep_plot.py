"""Throughput-latency curves of a sweep (the stages of one run, or a series of runs): output
tokens/s against p90 TTFT and against p90 TPOT, one point per stage or point, the run's TTFT
and TPOT objectives drawn across; and for stages, conversations/h per user against in total.

Why these two curves: they are the question a sweep answers, how much latency each step of
load costs, and where it crosses the SLO (the knee). The objectives are drawn as lines over the
whole x range, so the eye finds the last point under each; a tier's percentile is named on its
line, as it may be another one than the plotted p90.
"""

from __future__ import annotations

import math
from typing import Any

from bokeh.models import ColumnDataSource
from pydantic import ValidationError

from turnbench.metrics.model import Dist
from turnbench.metrics.stages import pareto
from turnbench.metrics.stages_model import Stage, TurnFigures
from turnbench.report.figures import PALETTE, finish_legend, hover, new_figure, zero_based
from turnbench.report.tables import stage_load
from turnbench.slo import SloConfig

CURVES = {"ttft": "TTFT", "tpot": "TPOT"}
"""The latency metrics a curve is drawn for, with their names on the page."""


def slo_lines(slo: dict[str, Any] | None, metric: str) -> list[tuple[str, float]]:
    """(label, threshold) of every objective on `metric` in the run's `slo:` section; none
    when it has none or is not valid (the SLO table says why)."""
    try:
        cfg = SloConfig.model_validate(slo) if slo else None
    except ValidationError:
        return []
    return [
        (f"SLO {tier}: {o.label}", o.threshold)
        for tier, spec in (cfg.tiers.items() if cfg else ())
        for o in spec.objectives
        if o.metric == metric
    ]


def _p90(point: Stage | TurnFigures, metric: str) -> float | None:
    dist: Dist = getattr(point, f"{metric}_ms")
    return dist.p90


def curve(points: list[Stage], metric: str, slo: dict[str, Any] | None) -> Any:
    """Output tokens/s in total (x) against the p90 of `metric` (y), the points joined in
    the sweep's order; None when no point has both."""
    known = [p for p in points if p.output_tokens_per_s is not None and _p90(p, metric) is not None]
    if not known:
        return None
    source = ColumnDataSource(
        {
            "x": [p.output_tokens_per_s for p in known],
            "y": [_p90(p, metric) for p in known],
            "name": [p.name for p in known],
            "load": [stage_load(p.mode, p.level) for p in known],
        }
    )
    name = CURVES[metric]
    p = new_figure(
        f"Throughput-latency: p90 {name} against output tokens/s",
        "output tokens/s (total)",
        f"{name} p90 (ms)",
    )
    p.line("x", "y", source=source, color=PALETTE[0], line_width=2, legend_label=f"{name} p90")
    dots = p.scatter("x", "y", source=source, size=9, color=PALETTE[0])
    p.text(
        "x", "y", text="name", source=source, x_offset=8, y_offset=-8, text_font_size="11px",
        text_color="#444",
    )  # fmt: skip
    for i, (turn, ys) in enumerate(_by_turn(known, metric).items()):
        p.line(
            source.data["x"], ys, color=PALETTE[(5 + i) % len(PALETTE)], line_width=1,
            line_dash="dotted", legend_label=f"turn {turn} p90",
        )  # fmt: skip
    right = max(source.data["x"]) * 1.15 or 1.0
    for i, (label, threshold) in enumerate(slo_lines(slo, metric)):
        p.line(
            [0, right], [threshold, threshold], color=PALETTE[(3 + i) % len(PALETTE)],
            line_dash="dashed", line_width=2, legend_label=label,
        )  # fmt: skip
    zero_based(p)
    p.x_range.start = 0
    p.x_range.range_padding = 0.15
    hover(
        p,
        [dots],
        [
            ("point", "@name (@load)"),
            ("total", "@x{0,0.0} tok/s"),
            (f"{name} p90", "@y{0.0} ms"),
        ],
    )
    finish_legend(p, "top_left")
    return p


def _by_turn(points: list[Stage], metric: str) -> dict[int, list[float]]:
    """Each turn index's p90 of `metric` at every point (NaN where it had none), for turns
    a stage or point gives apart (`by_turn`) and that some point has."""
    turns: dict[int, list[float]] = {}
    for i, point in enumerate(points):
        for row in point.by_turn:
            value = _p90(row, metric)
            ys = turns.setdefault(row.turn, [math.nan] * len(points))
            ys[i] = math.nan if value is None else value
    return {turn: ys for turn, ys in turns.items() if not all(map(math.isnan, ys))}


def curves(points: list[Stage], slo: dict[str, Any] | None) -> dict[str, Any]:
    """Both curves by panel name (`curve_ttft`, `curve_tpot`), and the conversations/h
    frontier (`conversations`), those with something to draw."""
    figs = {f"curve_{m}": curve(points, m, slo) for m in CURVES}
    figs["conversations"] = conversations_figure(points)
    return {key: fig for key, fig in figs.items() if fig is not None}


def conversations_figure(points: list[Stage]) -> Any:
    """Conversations/h per user against in total, one point per stage, their Pareto frontier
    joined; None when fewer than two points have both figures."""
    known = [
        p
        for p in points
        if p.conversations_per_h is not None and p.conversations_per_h_per_user is not None
    ]
    if len(known) < 2:
        return None
    source = ColumnDataSource(
        {
            "total": [p.conversations_per_h for p in known],
            "per_user": [p.conversations_per_h_per_user for p in known],
            "name": [p.name for p in known],
            "load": [stage_load(p.mode, p.level) for p in known],
        }
    )
    p = new_figure(
        "Stages: conversations/h per user against in total",
        "conversations/h (total)",
        "conversations/h per user (3600 / median length)",
    )
    front = pareto(known, "conversations_per_h", "conversations_per_h_per_user")
    p.line(
        [q.conversations_per_h for q in front], [q.conversations_per_h_per_user for q in front],
        color=PALETTE[1], line_width=2, legend_label="Pareto frontier",
    )  # fmt: skip
    dots = p.scatter("total", "per_user", source=source, size=10, color=PALETTE[0])
    p.text(
        "total", "per_user", text="name", source=source, x_offset=8, y_offset=-8,
        text_font_size="11px", text_color="#444",
    )  # fmt: skip
    zero_based(p)
    p.x_range.start = 0
    p.x_range.range_padding = p.y_range.range_padding = 0.25  # room for the names
    hover(
        p,
        [dots],
        [
            ("stage", "@name (@load)"),
            ("total", "@total{0,0.0} conversations/h"),
            ("per user", "@per_user{0,0.0} conversations/h"),
        ],
    )
    finish_legend(p, "bottom_right")
    return p
