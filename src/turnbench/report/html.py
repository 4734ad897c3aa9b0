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
from turnbench.report.console import REQUEST_ROWS, fmt

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{padding:.25rem .6rem;
border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child{text-align:left}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}.warn{background:#fff3cd;
border:1px solid #e0c36c;padding:.5rem .8rem;margin:.4rem 0}img{max-width:100%}
code{background:#f4f4f4;padding:0 .2rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["<table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode()
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def render(summary: dict[str, Any], series: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    run = summary["run"]
    req = summary["requests"]
    thr = req["throughput"]
    conv = summary["per_conversation"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>turnbench report {_e(run.get('run_id', ''))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>turnbench report: {_e(run.get('run_id', ''))}</h1>",
        f"<p>Target <code>{_e(run.get('target'))}</code>, model <code>{_e(run.get('model'))}"
        f"</code>, API {_e(run.get('api'))}; turnbench {_e(run.get('turnbench_version'))}; "
        f"ended: {_e(run.get('end_reason'))}.</p>",
    ]
    parts += [f"<div class='warn'>{_e(note)}</div>" for note in summary["verdict"]["notes"]]
    ratio = req["cached_token_ratio"]
    parts.append(
        "<h2>Run</h2>"
        + _table(
            ["what", "value"],
            [
                [
                    "attempts ok / failed / cancelled / warm-up",
                    f"{req['ok']} / {req['failed']} / {req['cancelled']} / {req['warmup']}",
                ],
                ["measured window s", fmt(req["window_s"], 2)],
                ["requests/s (successful)", fmt(thr["requests_per_s"], 2)],
                ["output tokens/s", fmt(thr["output_tokens_per_s"], 1)],
                ["cached prompt tokens %", fmt(ratio * 100 if ratio is not None else None)],
                *([f"error: {k}", n] for k, n in summary["errors"].items()),
            ],
        )
    )
    parts.append(
        "<h2>Per request (ms, successful requests)</h2>"
        + _table(
            ["metric", "count", "mean", "p50", "p90", "p95", "p99", "max"],
            [
                [
                    label,
                    fmt(req[key]["count"]),
                    *(fmt(req[key][k]) for k in ("mean", "p50", "p90", "p95", "p99", "max")),
                ]
                for label, key in REQUEST_ROWS
            ],
        )
    )
    parts.append(
        "<h2>Per turn</h2>"
        + _table(
            [
                "turn",
                "ok",
                "failed",
                "TTFT p50",
                "TTFT p90",
                "TTFT p99",
                "E2E p50",
                "E2E p99",
                "prompt tokens",
                "cached tokens",
                "cached %",
            ],
            [
                [
                    t["turn"],
                    t["ok"],
                    t["failed"],
                    fmt(t["ttft_ms"]["p50"]),
                    fmt(t["ttft_ms"]["p90"]),
                    fmt(t["ttft_ms"]["p99"]),
                    fmt(t["e2e_ms"]["p50"]),
                    fmt(t["e2e_ms"]["p99"]),
                    fmt(t["mean_prompt_tokens"], 0),
                    fmt(t["mean_cached_tokens"], 0),
                    fmt(t["cached_ratio"] * 100 if t["cached_ratio"] is not None else None),
                ]
                for t in summary["per_turn"]
            ],
        )
    )
    rate = conv["turn_success_rate"]
    parts.append(
        "<h2>Per conversation</h2>"
        + _table(
            ["what", "value"],
            [
                ["sessions", conv["sessions"]],
                *([f"outcome: {k}", n] for k, n in conv["outcomes"].items()),
                ["sessions with every turn ok", conv["sessions_fully_ok"]],
                [
                    "duration s p50 / p90 / max",
                    " / ".join(fmt(conv["duration_s"][k], 2) for k in ("p50", "p90", "max")),
                ],
                ["turn success rate %", fmt(rate * 100 if rate is not None else None)],
                ["messages dropped by truncation", conv["dropped_messages"]],
            ],
        )
    )
    parts.append("<h2>Plots</h2>")
    parts.append(_img(plots.throughput(series["throughput"]), "throughput over time"))
    parts.append(_img(plots.per_turn(summary["per_turn"]), "TTFT and tokens by turn"))
    parts.append(_img(plots.cdfs(series["cdf"]), "latency CDFs"))
    parts.append(_img(plots.ttft_over_time(series["ttft_samples"]), "TTFT over time"))
    parts.append(
        "<h2>Configuration</h2><pre>"
        + _e(json.dumps(summary["config"], indent=2))
        + "</pre></body></html>"
    )
    return "".join(parts)
