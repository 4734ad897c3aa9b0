"""sweep.html: a series sweep's one page, next to its sweep.json (throughput-latency curves
with the SLO lines, the Pareto frontier, the points' tables).

Why a page of its own: each point of a series is a run folder of its own (with no report.html,
as a probe), so no run report holds the points side by side. It is built like report.html
(Bokeh's script inlined, nothing fetched) from the same record sweep.json holds, so a sweep
Ctrl-C cut still gets its page for the points it finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from turnbench.capacity.sweep_report import frontier_table, points_table
from turnbench.report import stage_plot, sweep_plot
from turnbench.report.figures import page
from turnbench.report.html import HINT, document, escape, table_html

SWEEP_HTML = "sweep.html"


def render_sweep(record: dict[str, Any], slo: dict[str, Any] | None) -> str:
    """The sweep's page: its settings, the curves and the frontier, then its tables."""
    points = record["points"]
    figures = {
        **sweep_plot.curves(points, slo),
        "frontier": stage_plot.stages_figure(points, record["frontier"]),
    }
    figures = {key: fig for key, fig in figures.items() if fig is not None}
    script, divs = page(figures)
    body = [
        f"<h1>turnbench sweep: {escape(record['name'])}</h1>",
        f"<p class='meta'>Target <code>{escape(record['target'])}</code>; over "
        f"{escape(record['over'])}, {len(points)} of {len(record['planned'])} points of "
        f"{record['point_duration_s']:g} s; ended: {escape(record['ended'])}. Each point's run "
        "folder is beside this page.</p>",
        f"<p class='hint'>{escape(HINT)}</p>",
        *(f"<div class='panel' id='panel-{key}'>{div}</div>" for key, div in divs.items()),
        table_html(points_table(record)),
    ]
    if (front := frontier_table(record)) is not None:
        body.append(table_html(front))
    return document(f"turnbench sweep {record['name']}", body, script)


def write_sweep_html(folder: Path, record: dict[str, Any], slo: dict[str, Any] | None) -> Path:
    """Write sweep.html into the sweep's folder; its path."""
    path = folder / SWEEP_HTML
    path.write_text(render_sweep(record, slo), encoding="utf-8")
    return path
