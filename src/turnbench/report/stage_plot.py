"""A staged run's stages on the report: bands on every time plot, and the stages against each
other (tokens/s per user against tokens/s in total, the Pareto frontier joined).

Why both: the bands say which load was in force when a plot over time moved; the frontier plot
answers the question stages are run for, how much per-user speed each step of load costs.
"""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource
from bokeh.models.annotations import BoxAnnotation, Label

from turnbench.metrics.stages_model import FrontierPoint, Stage
from turnbench.report.figures import OK, PALETTE, finish_legend, hover, new_figure, zero_based
from turnbench.report.tables import stage_load


def mark_stages(p: Any, stages: list[Stage]) -> None:
    """Every other stage shaded faintly on a time plot, each named at the top (a sweep's
    point, which has no span on a run's clock, is not a stage)."""
    for i, stage in enumerate(stages):
        start, end = stage.start_s, stage.end_s
        if start is None or end is None:
            continue
        if i % 2:
            p.add_layout(BoxAnnotation(left=start, right=end, fill_color="#888", fill_alpha=0.07))
        p.add_layout(
            Label(
                x=start,
                y=4,
                y_units="screen",
                text=stage.name,
                text_font_size="10px",
                text_color="#777",
                x_offset=3,
            )
        )


def stages_figure(stages: list[Stage], frontier: list[FrontierPoint]) -> Any:
    """Each stage's (or sweep point's) output tokens/s in total against per user (p50), the
    frontier joined."""
    if not stages:
        return None

    def source(points: list[Stage]) -> ColumnDataSource:
        return ColumnDataSource(
            {
                "total": [s.output_tokens_per_s for s in points],
                "per_user": [s.output_tokens_per_s_per_user for s in points],
                "name": [s.name for s in points],
                "load": [stage_load(s.mode, s.level) for s in points],
                "ttft": [s.ttft_ms.p90 for s in points],
                "tpot": [s.tpot_ms.p90 for s in points],
            }
        )

    p = new_figure(
        "Stages: output tokens/s per user against in total",
        "output tokens/s (total)",
        "output tokens/s per user (p50)",
    )
    if frontier:
        ordered = sorted(frontier, key=lambda s: s.output_tokens_per_s)
        p.line(
            [s.output_tokens_per_s for s in ordered],
            [s.output_tokens_per_s_per_user for s in ordered],
            color=PALETTE[1],
            line_width=2,
            legend_label="Pareto frontier",
        )
    dots = p.scatter(
        "total", "per_user", source=source(stages), size=10, color=OK, legend_label="stage"
    )
    p.text(
        "total",
        "per_user",
        text="name",
        source=source(stages),
        x_offset=8,
        y_offset=-8,
        text_font_size="11px",
        text_color="#444",
    )
    zero_based(p)
    p.x_range.start = 0
    p.x_range.range_padding = p.y_range.range_padding = 0.25  # room for the names
    hover(
        p,
        [dots],
        [
            ("stage", "@name (@load)"),
            ("total", "@total{0,0.0} tok/s"),
            ("per user", "@per_user{0.0} tok/s"),
            ("TTFT p90", "@ttft{0.0} ms"),
            ("TPOT p90", "@tpot{0.0} ms"),
        ],
    )
    finish_legend(p, "bottom_right")
    return p
