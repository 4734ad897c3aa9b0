"""The report's plotting kit (Bokeh): one look for every figure, hover, legends that toggle,
outages shaded, and the page's script with Bokeh's JavaScript inlined.

Why Bokeh: interactive plots (hover, zoom and pan on time, series toggled from the legend) in
a file that opens offline. Its core script (`bokeh.min.js`, about 1.3 MB) is inlined once per
page and no other bundle is needed (no widgets, tables or MathJax); data goes in as base64
numpy arrays, so a plot costs its points' bytes and little more.
Why one `page` call for all figures: they then share one Bokeh document, so the time plots
share one x range (zoom one, the others follow) and the script is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from bokeh.document import Document
from bokeh.embed import components
from bokeh.models import DataRange1d, HoverTool, Model, Range1d
from bokeh.models.annotations import BoxAnnotation
from bokeh.plotting import figure
from bokeh.resources import Resources

from turnbench.metrics.outages_model import Outage

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
OK, FAILED, TOKENS, MUTED = "#1f77b4", "#d62728", "#2ca02c", "#7f7f7f"
TOOLS = "pan,wheel_zoom,box_zoom,reset,save"
MAX_BINS = 2000
"""At most this many points on a time axis: a run of hours still draws a few hundred KB."""

Span = tuple[float, float]
"""An outage on the run clock, seconds: (start, end), end the run's end if it never ended."""


def outage_spans(outages: list[Outage]) -> list[Span]:
    """The summary's outages as spans; one still open at the end reaches the run's end."""
    return [(o.start_s, o.start_s + o.duration_s) for o in outages]


def new_figure(
    title: str,
    x_label: str,
    y_label: str,
    *,
    height: int = 300,
    x_range: Any = None,
    y_range: Any = None,
) -> Any:
    """A figure in the report's style: full width, toolbar above, wheel zooms x and y."""
    kwargs: dict[str, Any] = {}
    if x_range is not None:
        kwargs["x_range"] = x_range
    if y_range is not None:
        kwargs["y_range"] = y_range
    p: Any = figure(
        title=title,
        height=height,
        sizing_mode="stretch_width",
        tools=TOOLS,
        active_scroll="wheel_zoom",
        toolbar_location="above",
        x_axis_label=x_label,
        y_axis_label=y_label,
        **kwargs,
    )
    p.title.text_font_size = "13px"
    p.title.text_color = "#333"
    p.background_fill_color = "#fcfcfc"
    p.grid.grid_line_color = "#e8e8e8"
    p.outline_line_color = None
    p.axis.axis_label_text_font_style = "normal"
    p.axis.axis_label_text_color = "#555"
    p.toolbar.logo = None
    return p


def time_range() -> DataRange1d:
    """The x range every run-time plot shares (zoom or pan one, all follow)."""
    return DataRange1d(start=0, range_padding=0.02)


def zero_based(p: Any) -> None:
    """Counts and rates start at 0, so a small wobble never looks like a cliff."""
    p.y_range.start = 0


def hover(
    p: Any,
    renderers: Sequence[Any],
    tooltips: list[tuple[str, str]],
    mode: Literal["mouse", "vline", "hline"] = "mouse",
) -> None:
    """Tooltips on these renderers; values shown as text (Bokeh escapes `@field` values)."""
    p.add_tools(HoverTool(renderers=list(renderers), tooltips=tooltips, mode=mode))


def hover_steps(p: Any, source: Any, x: str, y: str, tooltips: list[tuple[str, str]]) -> None:
    """Tooltips for a step line (Bokeh cannot hit-test steps): on an unseen line through its
    corners, which answers wherever the mouse's x crosses it."""
    trace = p.line(x, y, source=source, alpha=0)
    hover(p, [trace], tooltips, mode="vline")


def finish_legend(p: Any, location: str = "top_left") -> None:
    """Clicking a legend entry hides its series; the legend is laid over the plot, faint."""
    if not p.legend:
        return
    p.legend.click_policy = "hide"
    p.legend.location = location
    p.legend.label_text_font_size = "11px"
    p.legend.background_fill_alpha = 0.7
    p.legend.spacing = 0
    p.legend.padding = 4


def shade(p: Any, spans: list[Span]) -> None:
    """Mark outages on a time axis, so a dip or a gap explains itself."""
    for start, end in spans:
        p.add_layout(BoxAnnotation(left=start, right=end, fill_color=FAILED, fill_alpha=0.12))


def rebin(t: np.ndarray, columns: dict[str, np.ndarray], how: str = "mean") -> dict[str, Any]:
    """At most MAX_BINS points: consecutive points merged (mean or max), so a long run's
    per-second series stays small; a short one passes unchanged."""
    n = len(t)
    if n <= MAX_BINS:
        return {"t": t, **columns}
    k = -(-n // MAX_BINS)
    starts = np.arange(0, n, k)
    out: dict[str, Any] = {"t": t[starts]}
    for name, values in columns.items():
        v = np.asarray(values, dtype=float)
        if how == "max":
            out[name] = np.fmax.reduceat(v, starts)
        else:
            sums = np.add.reduceat(np.nan_to_num(v), starts)
            counts = np.add.reduceat((~np.isnan(v)).astype(float), starts)
            with np.errstate(invalid="ignore"):
                out[name] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


def unit_range() -> Range1d:
    """0 to 105 %: shares and hit rates on one fixed scale."""
    return Range1d(start=0, end=105)


_RESOURCES = Resources(mode="inline", components=["bokeh"])


def head_script() -> str:
    """Bokeh's core JavaScript as an inline <script> (nothing fetched)."""
    return str(_RESOURCES.render_js())


def page(figures: dict[str, Model]) -> tuple[str, dict[str, str]]:
    """The script that draws these figures and each figure's <div>, by name."""
    if not figures:
        return "", {}
    doc = Document()
    with doc.models.freeze():  # one recount of the document's models, not one per figure
        for fig in figures.values():
            doc.add_root(fig)
    script, divs = components(figures)
    return str(script), {name: str(div) for name, div in divs.items()}
