"""The self-contained HTML report: the answer, interactive plots, the console's tables, one file.

Why one file with Bokeh inlined: it opens offline from the run folder, fetches nothing, and
still zooms, pans, hovers and toggles series. Everything that came from the server or the
config (model name, URL, error kinds and messages) is escaped: the report must never run or
render what a server sent (Bokeh shows tooltip values as text).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from turnbench.metrics.model import Summary
from turnbench.metrics.stages_model import Stage
from turnbench.report import agents, cache_plot, plots, server_plot, stage_plot, sweep_plot
from turnbench.report.answer import answer_html
from turnbench.report.figures import head_script, outage_spans, page, time_range
from turnbench.report.lanes import lanes_figure
from turnbench.report.tables import TextTable, all_tables, unreachable_problem

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;
max-width:1200px;color:#222;padding:0 1rem;background:#fff}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}th,td{padding:.25rem .6rem;
border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f6f7f9}h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;
margin-top:2rem;border-bottom:2px solid #eee;padding-bottom:.2rem}.warn{background:#fff3cd;
border:1px solid #e0c36c;padding:.5rem .8rem;margin:.4rem 0}img{max-width:100%}
code{background:#f4f4f4;padding:0 .2rem}.problem{background:#f8d7da;border:1px solid #d9534f;
color:#842029;font-weight:bold;padding:.5rem .8rem;margin:.4rem 0}
.meta{color:#555;margin-top:0}.cards{display:grid;gap:.7rem;margin:1rem 0;
grid-template-columns:repeat(auto-fill,minmax(260px,1fr))}.card{border:1px solid #ddd;
border-left:6px solid #aaa;border-radius:4px;padding:.6rem .8rem;background:#fafafa}
.card.good{border-left-color:#2e8b57}.card.bad{border-left-color:#d62728;background:#fdf3f3}
.card.warn{border-left-color:#e0a800;background:#fffaf0}.card.wide{grid-column:1/-1}
.card-title{font-size:.75rem;text-transform:uppercase;letter-spacing:.05em;color:#666}
.card-big{font-size:1.35rem;font-weight:600;margin:.15rem 0}.card-small{font-size:.85rem;
color:#444}.panel{margin:.6rem 0 1rem;min-height:200px}.pair{display:grid;gap:1rem;
grid-template-columns:1fr 1fr}nav a{margin-right:.9rem;color:#1f5fa8;text-decoration:none}
.hint{color:#666;font-size:.85rem}pre{background:#f6f7f9;padding:.6rem;overflow:auto}
"""
HINT = (
    "Hover a line or a point for its values; drag to pan, scroll to zoom (the time plots move "
    "together), click a legend entry to hide its series, ⟲ resets."
)


def escape(value: Any) -> str:
    """Text for HTML: every value from a server or a config is escaped, quotes too."""
    return html.escape(str(value), quote=True)


def table_html(table: TextTable) -> str:
    """A text table as an HTML table under its title."""
    out = [f"<h2>{escape(table.title)}</h2><table>"]
    if table.header is not None:
        out.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in table.header) + "</tr>")
    for row in table.rows:
        out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def document(title: str, body: list[str], script: str) -> str:
    """A whole page: the stylesheet, Bokeh's inlined script, the body, the figures' script."""
    return "".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{escape(title)}</title><style>{CSS}</style>",
            head_script() if script else "",
            "</head><body>",
            *body,
            script,
            "</body></html>",
        ]
    )


NO_LOAD: dict[str, Any] = {
    "bin_s": 1.0,
    "concurrency": {"t": []},
    "lag": {"t": []},
    "errors": {},
    "ttft_by_context": {"prompt_tokens": []},
}
"""Load series with nothing in them: their panels are left out."""


def _sweep_curves(stages: list[Stage], slo: dict[str, Any] | None) -> dict[str, Any]:
    """The throughput-latency curves of a run of 2+ stages (a warm-up stage left out)."""
    points = [s for s in stages if s.name != "warmup"]
    return sweep_plot.curves(points, slo) if len(points) >= 2 else {}


def _figures(
    summary: Summary, series: dict[str, Any], load: dict[str, Any], lanes: list[Any]
) -> dict[str, list[tuple[str, Any]]]:
    """Every figure with something to draw, by section; the time plots share one x range."""
    spans = outage_spans(summary.outages)
    x = time_range()
    stages = summary.stages or []
    return {
        "Per stage": [
            ("stages", stage_plot.stages_figure(stages, summary.frontier or [])),
            *_sweep_curves(stages, summary.config.get("slo")).items(),
        ],
        "Over time": [
            ("throughput", plots.throughput(series["throughput"], spans, x)),
            ("concurrency", plots.concurrency(load["concurrency"], spans, x)),
            ("lag", plots.schedule_lag(load["lag"], spans, x)),
            ("errors", plots.errors(load["errors"], load["bin_s"], spans, x)),
            ("ttft_time", plots.ttft_over_time(series["ttft_samples"], spans, x)),
            ("server_queue", server_plot.server_queue(summary.server, spans, x)),
            ("server_cache", server_plot.server_cache(summary.server, spans, x)),
            ("cache_time", cache_plot.cache_over_time(summary.cache, x)),
        ],
        "Conversations": [("lanes", lanes_figure(lanes) if lanes else None)],
        "Agent tasks": [
            ("agent_split", agents.split_figure(summary.agents)),
            ("agent_ttft_depth", agents.ttft_depth_figure(summary.agents)),
        ],
        "By turn and context": [
            ("per_turn", plots.per_turn(summary.per_turn)),
            ("ttft_context", plots.ttft_by_context(load["ttft_by_context"])),
            ("cache_turn", cache_plot.cache_by_turn(summary.cache)),
        ],
        "Latency distributions": [
            ("cdf_ttft", plots.cdfs(series["cdf"], "ttft")),
            ("cdf_e2e", plots.cdfs(series["cdf"], "e2e")),
        ],
    }


def render(
    summary: Summary,
    series: dict[str, Any],
    load: dict[str, Any] | None = None,
    lanes: list[dict[str, Any]] | None = None,
    run_dir: Path | None = None,
    *,
    validate: bool = False,
) -> str:
    """The whole report as one HTML document. `load` (`load_series`) and `lanes`
    (`lane_rows`): None leaves their panels out (a test of the tables needs neither);
    `run_dir` finds a capacity search above the run; `validate` runs Bokeh's checks on
    the figures (a test's; a report skips them, see `figures.page`)."""
    run = summary.run
    sections = {
        name: [(key, fig) for key, fig in figs if fig is not None]
        for name, figs in _figures(summary, series, load or NO_LOAD, lanes or []).items()
    }
    for _key, fig in sections["Over time"]:
        stage_plot.mark_stages(fig, summary.stages or [])
    script, divs = page(
        {key: fig for figs in sections.values() for key, fig in figs}, validate=validate
    )
    body = [
        f"<h1>turnbench report: {escape(run.run_id or '')}</h1>",
        f"<p class='meta'>Target <code>{escape(run.target)}</code>, model "
        f"<code>{escape(run.model)}</code>, API {escape(run.api)}; turnbench "
        f"{escape(run.turnbench_version)}; ended: {escape(run.end_reason)}.</p>",
    ]
    if (problem := unreachable_problem(summary)) is not None:
        body.append(f"<div class='problem'>problem: {escape(problem)}</div>")
    body.append(answer_html(summary, run_dir))
    body += [f"<div class='warn'>notice: {escape(n['message'])}</div>" for n in summary.notices]
    anchors = [name for name, figs in sections.items() if figs]
    nav = "".join(f"<a href='#sec-{i}'>{escape(n)}</a>" for i, n in enumerate(anchors))
    body.append(f"<nav>{nav}<a href='#tables'>Tables</a><a href='#config'>Configuration</a></nav>")
    body.append(f"<p class='hint'>{escape(HINT)}</p>")
    for i, name in enumerate(anchors):
        body.append(f"<h2 id='sec-{i}'>{escape(name)}</h2>")
        panels = [
            f"<div class='panel' id='panel-{key}'>{divs[key]}</div>" for key, _ in sections[name]
        ]
        pair = name == "Latency distributions" and len(panels) == 2
        body.append(f"<div class='pair'>{''.join(panels)}</div>" if pair else "".join(panels))
    body.append("<div id='tables'></div>")
    body += [table_html(table) for table in all_tables(summary)]
    body.append(
        "<h2 id='config'>Configuration</h2><pre>"
        + escape(json.dumps(summary.config, indent=2))
        + "</pre>"
    )
    return document(f"turnbench report {run.run_id or ''}", body, script)
