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
from bokeh.core.serialization import Serializer
from bokeh.core.templates import JS_RESOURCES, MACROS, ROOT_DIV
from bokeh.core.validation import check_integrity
from bokeh.document import Document
from bokeh.embed.elements import script_for_render_items
from bokeh.embed.util import RenderItem
from bokeh.model import collect_models
from bokeh.models import (
    BoxZoomTool,
    DataRange1d,
    HoverTool,
    Model,
    PanTool,
    Range1d,
    ResetTool,
    SaveTool,
    WheelZoomTool,
)
from bokeh.models.annotations import BoxAnnotation
from bokeh.models.renderers import GlyphRenderer
from bokeh.plotting import figure
from bokeh.resources import Resources
from bokeh.util.serialization import make_globally_unique_css_safe_id, make_globally_unique_id

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
        tools=[],
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
    wheel = WheelZoomTool()
    p.add_tools(PanTool(), wheel, BoxZoomTool(dimensions="both"), ResetTool(), SaveTool())
    p.toolbar.active_scroll = wheel
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


def _drop_unseen_glyphs(fig: Any) -> None:
    """A glyph renderer's selected-off and muted looks are never seen on the report (it has no
    selection tool, and its legends hide rather than mute): they are left to BokehJS's
    defaults instead of two more models per series to write."""
    for renderer in fig.renderers:
        if isinstance(renderer, GlyphRenderer):
            renderer.nonselection_glyph = "auto"
            renderer.muted_glyph = "auto"


def page(figures: dict[str, Model], *, validate: bool = False) -> tuple[str, dict[str, str]]:
    """The script that draws these figures and each figure's <div>, by name.

    What `bokeh.embed.components` writes, without the work a report does not need: it adds
    the figures to a document (a walk over every model), walks them again in search of
    Python callbacks and checks the whole document, together about half the page's cost.
    One serializer writes every figure, so a model they share (the time plots' x range) is
    written once and referenced. `validate` runs Bokeh's checks (a test's guard against a
    malformed figure) and raises on any error or warning they find."""
    if not figures:
        return "", {}
    for fig in figures.values():
        _drop_unseen_glyphs(fig)
    if validate:
        issues = check_integrity(list(collect_models(*figures.values())))
        if found := [*issues.error, *issues.warning]:
            named = "; ".join(f"{issue.name}: {issue.extra}" for issue in found)
            raise ValueError(f"the report's figures fail Bokeh's checks: {named}")
    doc = Document().to_json(deferred=False)  # the version, title and config
    doc["roots"] = Serializer(deferred=False).encode(list(figures.values()))
    doc_id = make_globally_unique_id()
    item = RenderItem(
        doc_id, roots={fig: make_globally_unique_css_safe_id() for fig in figures.values()}
    )
    script = JS_RESOURCES.render(
        js_raw=[script_for_render_items({doc_id: doc}, [item])], js_files=[]
    )
    divs = [ROOT_DIV.render(root=root, macros=MACROS) for root in item.roots]
    return str(script), dict(zip(figures, divs, strict=True))
