"""The search's report: a console table of the probes and report.html with its plot.

Why from search.json's content alone: it holds every probe's figures and verdict, so the
report can be rebuilt without the runs; each probe's own report stays in its folder.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from turnbench.report.tables import TextTable, fmt

RESULT = {True: "pass", False: "FAIL"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}h1{font-size:1.5rem}.answer{font-size:1.2rem;
font-weight:bold}.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.5rem .8rem;
margin:.4rem 0}img{max-width:100%}
"""


def _check_names(record: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for probe in record["probes"]:
        names += [c["name"] for c in probe["checks"] if c["name"] not in names]
    return names


def _role(probe: dict[str, Any]) -> str:
    if probe["superseded_by"]:
        return f"{probe['role']}, short"
    if probe["end_reason"] == "interrupted":
        return f"{probe['role']}, interrupted"
    if probe.get("stopped_early"):
        return f"{probe['role']}, stopped early"
    return str(probe["role"])


def probes_table(record: dict[str, Any]) -> TextTable:
    """One row per probe: its load, verdict, each check's measured value and its figures.
    A short probe (too few conversations) gives no verdict: the next one reruns it longer."""
    names = _check_names(record)
    rows = []
    for p in record["probes"]:
        measured = {c["name"]: c["measured"] for c in p["checks"]}
        result = RESULT[p["passed"]] if p["counts"] else "-"
        rows.append(
            [
                f"{p['probe']:02d}",
                _role(p),
                fmt(p["load"], 3) if record["over"] == "rate" else fmt(int(p["load"])),
                fmt(p["duration_s"], 1),
                result,
                *(fmt(measured.get(n)) for n in names),
                fmt(p["ttft_p90_ms"]),
                fmt(p["output_tokens_per_s"]),
                fmt(p["finished_conversations"]),
                "yes" if p["warm"] else "",
            ]
        )
    load = "users" if record["over"] == "users" else "sessions/s"
    header = ["probe", "role", load, "s", "result", *names]
    header += ["TTFT p90 ms", "output tok/s", "conv.", "warm start"]
    return TextTable(f"Capacity search ({record['criteria']['description']})", header, rows)


def _plot(record: dict[str, Any]) -> bytes | None:
    """Output tokens/s and every check's measured value against load, thresholds dashed
    (the failed-request share only when some failed); passing probes green, failing red;
    p90 TTFT too when no check is on TTFT."""
    probes = [p for p in record["probes"] if p["counts"]]
    if not probes:
        return None
    import matplotlib  # imported when a report is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[float | None], float | None]] = [
        ("output tok/s", [p["output_tokens_per_s"] for p in probes], None)
    ]
    for name in _check_names(record)[:3]:
        checks = [next((c for c in p["checks"] if c["name"] == name), None) for p in probes]
        values = [c["measured"] if c is not None else None for c in checks]
        if name == "failed requests" and not any(values):
            continue  # a flat line at 0 says nothing the table does not
        first = next(c for c in checks if c is not None)
        panels.append((f"{name} ({first['unit']})", values, first["threshold"]))
    if not any("TTFT" in label for label, _, _ in panels):
        panels.append(("p90 TTFT (ms)", [p["ttft_p90_ms"] for p in probes], None))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    loads = [p["load"] for p in probes]
    colors = ["tab:green" if p["passed"] else "tab:red" for p in probes]
    holds = (record.get("answer") or {}).get("holds")
    for ax, (label, values, threshold) in zip(axes[0], panels, strict=True):
        shown = [(x, y, c) for x, y, c in zip(loads, values, colors, strict=True) if y is not None]
        ax.scatter([s[0] for s in shown], [s[1] for s in shown], c=[s[2] for s in shown], s=18)
        if threshold is not None:
            ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label="SLO")
        if holds is not None:
            ax.axvline(holds, color="grey", linestyle=":", linewidth=1, label="holds")
        ax.set_xlabel(record["over"] if record["over"] == "users" else "sessions/s")
        ax.set_title(label, fontsize=9)
        if threshold is not None or holds is not None:
            ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def render_html(record: dict[str, Any], folder: Path | None = None) -> str:
    """The search's report.html: the answer, its details, the probes, the plot, one file.

    Each probe links to its report.html where `folder` (the search's) holds one, else to
    its summary.json (probes skip their HTML unless `--probe-html`)."""
    answer = record.get("answer") or {}
    table = probes_table(record)
    cells = []
    for row, probe in zip(table.rows, record["probes"], strict=True):
        page = "report.html"
        if folder is None or not (folder / probe["folder"] / page).exists():
            page = "summary.json"
        link = f"<a href='{_e(probe['folder'])}/{page}'>{_e(probe['folder'])}</a>"
        tail = "".join(f"<td>{_e(c)}</td>" for c in row[1:])
        cells.append(f"<tr><td>{link}</td>{tail}</tr>")
    png = _plot(record)
    img = (
        f"<p><img alt='probes against load' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'></p>"
        if png is not None
        else ""
    )
    return "".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>turnbench capacity {_e(record['name'])}</title><style>{_CSS}</style>",
            f"</head><body><h1>turnbench capacity: {_e(record['name'])}</h1>",
            f"<p>Target <code>{_e(record['target'])}</code>; ",
            f"{_e(record['criteria']['description'])}; ",
            f"{len(record['probes'])} probes in {record['elapsed_s']:.0f} s.</p>",
            f"<p class='answer'>{_e(answer.get('sentence', 'no answer'))}</p>",
            *(f"<div class='warn'>{_e(d)}</div>" for d in answer.get("details", [])),
            f"<h2>{_e(table.title)}</h2><table><tr>",
            *(f"<th>{_e(h)}</th>" for h in table.header or []),
            "</tr>",
            *cells,
            "</table><h2>Against load</h2>",
            img,
            "</body></html>",
        ]
    )
