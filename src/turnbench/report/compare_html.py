"""The comparison as one self-contained HTML page: the console's tables and interactive plots
of every run overlaid (per-turn TTFT, TTFT and E2E CDFs, throughput over time), one colour per
run, Bokeh inlined as in report.html.

Why like report.html: it opens offline from the file and fetches nothing; every text that came
from a run (folder names, config values, error kinds) is escaped. Clicking a run in a legend
hides it, so two of five runs can be set side by side.
"""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource

from turnbench.report.compare import Comparison
from turnbench.report.compare_tables import LEGEND, all_tables
from turnbench.report.figures import (
    PALETTE,
    finish_legend,
    hover,
    new_figure,
    page,
    zero_based,
)
from turnbench.report.html import document, escape, table_html


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def per_turn_plot(c: Comparison) -> Any:
    """TTFT p50 (solid) and p90 (dashed) by turn index, one colour per run."""
    p = new_figure("TTFT by turn index (p50 solid, p90 dashed)", "turn", "TTFT (ms)", height=340)
    drawn = []
    for i, run in enumerate(c.runs):
        rows = [t for t in run.summary.per_turn if t.ttft_ms.count]
        if not rows:
            continue
        src = ColumnDataSource(
            {
                "turn": [t.turn for t in rows],
                "p50": [t.ttft_ms.p50 for t in rows],
                "p90": [t.ttft_ms.p90 for t in rows],
                "n": [t.ok for t in rows],
                "run": [run.letter] * len(rows),
            }
        )
        label = f"{run.letter}: {run.path.name}"
        drawn.append(
            p.line("turn", "p50", source=src, color=_colour(i), line_width=2, legend_label=label)
        )
        p.scatter("turn", "p50", source=src, color=_colour(i), size=5, legend_label=label)
        p.line("turn", "p90", source=src, color=_colour(i), line_dash="dashed", legend_label=label)
    if not drawn:
        return None
    p.xaxis.ticker.min_interval = 1
    zero_based(p)
    hover(
        p,
        drawn,
        [("run", "@run"), ("turn", "@turn (@n ok)"), ("TTFT", "p50 @p50{0.0} / p90 @p90{0.0} ms")],
        mode="vline",
    )
    finish_legend(p)
    return p


def cdf_plot(c: Comparison, series: list[dict[str, Any]], metric: str) -> Any:
    """One latency's CDF (from the send), one line per run."""
    key = f"{metric}_ms"
    if not any(s["cdf"].get(key) for s in series):
        return None
    p = new_figure(f"{metric.upper()} CDF", "ms", "fraction of requests", height=300)
    drawn = []
    for i, (run, s) in enumerate(zip(c.runs, series, strict=True)):
        points = s["cdf"].get(key) or []
        if points:
            src = ColumnDataSource(
                {
                    "ms": [q[0] for q in points],
                    "f": [q[1] for q in points],
                    "run": [run.letter] * len(points),
                }
            )
            drawn.append(
                p.line(
                    "ms", "f", source=src, color=_colour(i), line_width=2, legend_label=run.letter
                )
            )
    hover(
        p,
        drawn,
        [("run", "@run"), ("latency", "@ms{0.0} ms"), ("fraction", "@f{0.000}")],
        mode="vline",
    )
    finish_legend(p, "bottom_right")
    return p


def throughput_plot(c: Comparison, series: list[dict[str, Any]]) -> Any:
    """Successful requests per second over each run's own time, one line per run."""
    if not any(s["throughput"] for s in series):
        return None
    p = new_figure("Throughput over time (by completion second)", "run time (s)", "ok requests/s")
    drawn = []
    for i, (run, s) in enumerate(zip(c.runs, series, strict=True)):
        points = s["throughput"]
        if points:
            src = ColumnDataSource(
                {
                    "t": [q["t"] for q in points],
                    "ok": [q["ok"] for q in points],
                    "run": [run.letter] * len(points),
                }
            )
            drawn.append(
                p.line(
                    "t", "ok", source=src, color=_colour(i), line_width=2, legend_label=run.letter
                )
            )
    zero_based(p)
    hover(p, drawn, [("run", "@run"), ("t", "@t s"), ("ok", "@ok requests/s")], mode="vline")
    finish_legend(p)
    return p


def render(c: Comparison, series: list[dict[str, Any]]) -> str:
    """The whole page; `series` are the runs' `metrics.series` (plots), in the runs' order."""
    letters = ", ".join(f"{r.letter}: {r.path.name}" for r in c.runs)
    figures = {
        "per_turn": per_turn_plot(c),
        "cdf_ttft": cdf_plot(c, series, "ttft"),
        "cdf_e2e": cdf_plot(c, series, "e2e"),
        "throughput": throughput_plot(c, series),
    }
    script, divs = page({k: f for k, f in figures.items() if f is not None})
    panels = {k: f"<div class='panel' id='panel-{k}'>{d}</div>" for k, d in divs.items()}
    body = [f"<h1>turnbench compare</h1><p class='meta'>{escape(letters)}</p>"]
    body += [f"<div class='warn'>note: {escape(note)}</div>" for note in c.notes]
    body.append("<h2>Plots</h2>")
    body.append(
        "<p class='hint'>Hover for values; drag to pan, scroll to zoom; click a run in a legend "
        "to hide it.</p>"
    )
    body.append(panels.get("per_turn", ""))
    body.append(f"<div class='pair'>{panels.get('cdf_ttft', '')}{panels.get('cdf_e2e', '')}</div>")
    body.append(panels.get("throughput", ""))
    body += [table_html(t) for t in all_tables(c)]
    body.append(f"<p>{escape(LEGEND)}</p>")
    if not c.config_diff:
        body.append("<p>Configs: the same in every run.</p>")
    return document(f"turnbench compare {letters}", body, script)
