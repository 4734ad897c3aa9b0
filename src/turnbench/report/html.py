"""The self-contained HTML report: the console's tables, the verdict and the plots, one file.

Everything that came from the server or the config (model name, URL, error kinds) is escaped:
the report must never run or render what a server sent.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from turnbench.report import plots
from turnbench.report.cache_plot import cache_plot
from turnbench.report.server_plot import server_over_time
from turnbench.report.tables import TextTable, all_tables, unreachable_problem

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{padding:.25rem .6rem;
border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child{text-align:left}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}.warn{background:#fff3cd;
border:1px solid #e0c36c;padding:.5rem .8rem;margin:.4rem 0}img{max-width:100%}
code{background:#f4f4f4;padding:0 .2rem}.problem{background:#f8d7da;border:1px solid #d9534f;
color:#842029;font-weight:bold;padding:.5rem .8rem;margin:.4rem 0}
"""


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


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode()
    return f'<p><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></p>'


def render(summary: dict[str, Any], series: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    run = summary["run"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>turnbench report {escape(run.get('run_id', ''))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>turnbench report: {escape(run.get('run_id', ''))}</h1>",
        f"<p>Target <code>{escape(run.get('target'))}</code>, model "
        f"<code>{escape(run.get('model'))}</code>, API {escape(run.get('api'))}; turnbench "
        f"{escape(run.get('turnbench_version'))}; ended: {escape(run.get('end_reason'))}.</p>",
    ]
    problem = unreachable_problem(summary)
    if problem is not None:
        parts.append(f"<div class='problem'>problem: {escape(problem)}</div>")
    parts += [f"<div class='warn'>{escape(note)}</div>" for note in summary["verdict"]["notes"]]
    parts += [table_html(table) for table in all_tables(summary)]
    parts += [f"<div class='warn'>notice: {escape(n['message'])}</div>" for n in summary["notices"]]
    spans = plots.outage_spans(summary["outages"])
    parts.append("<h2>Plots</h2>")
    parts.append(_img(plots.throughput(series["throughput"], spans), "throughput over time"))
    parts.append(_img(plots.per_turn(summary["per_turn"]), "TTFT and tokens by turn"))
    parts.append(_img(plots.cdfs(series["cdf"]), "latency CDFs"))
    parts.append(_img(plots.ttft_over_time(series["ttft_samples"], spans), "TTFT over time"))
    server_png = server_over_time(summary.get("server"), series["ttft_samples"], spans)
    parts.append(_img(server_png, "client TTFT and server metrics over time"))
    cache_png = cache_plot(summary.get("cache"))
    parts.append(_img(cache_png, "prefix cache: ideal against realised, by turn and over time"))
    parts.append(
        "<h2>Configuration</h2><pre>"
        + escape(json.dumps(summary["config"], indent=2))
        + "</pre></body></html>"
    )
    return "".join(parts)
