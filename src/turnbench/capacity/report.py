"""The search's report: a console table of the probes and report.html with its plots.

Why from search.json's content alone: it holds every probe's figures and verdict, so the
report can be rebuilt without the runs; each probe's own report stays in its folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from turnbench.report.tables import TextTable, fmt

RESULT = {True: "pass", False: "FAIL"}


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


def _panels(record: dict[str, Any]) -> list[tuple[str, str, list[float | None], float | None]]:
    """(key, label, value per judged probe, threshold) of each plot: output tokens/s, up to
    three checks (the failed-request share only when some failed), p90 TTFT when no check is
    on TTFT."""
    probes = [p for p in record["probes"] if p["counts"]]
    panels: list[tuple[str, str, list[float | None], float | None]] = [
        ("tokens", "output tok/s", [p["output_tokens_per_s"] for p in probes], None)
    ]
    for i, name in enumerate(_check_names(record)[:3]):
        checks = [next((c for c in p["checks"] if c["name"] == name), None) for p in probes]
        values = [c["measured"] if c is not None else None for c in checks]
        if name == "failed requests" and not any(values):
            continue  # a flat line at 0 says nothing the table does not
        first = next(c for c in checks if c is not None)
        panels.append((f"check{i}", f"{name} ({first['unit']})", values, first["threshold"]))
    if not any("TTFT" in label for _, label, _, _ in panels):
        panels.append(("ttft", "p90 TTFT (ms)", [p["ttft_p90_ms"] for p in probes], None))
    return panels


def figures(record: dict[str, Any]) -> dict[str, Any]:
    """Each panel against load (Bokeh): passing probes green, failing red, the threshold
    dashed, the answer's load dotted; hover names each probe. None with no judged probe."""
    from bokeh.models import ColumnDataSource  # imported when a report is drawn
    from bokeh.models.annotations import Span

    from turnbench.report.figures import finish_legend, hover, new_figure, zero_based

    probes = [p for p in record["probes"] if p["counts"]]
    holds = (record.get("answer") or {}).get("holds")
    x_label = "users" if record["over"] == "users" else "sessions/s"
    out: dict[str, Any] = {}
    for key, label, values, threshold in _panels(record):
        shown = [(p, v) for p, v in zip(probes, values, strict=True) if v is not None]
        if not shown:
            continue
        source = ColumnDataSource(
            {
                "x": [p["load"] for p, _ in shown],
                "y": [v for _, v in shown],
                "color": ["#2ca02c" if p["passed"] else "#d62728" for p, _ in shown],
                "probe": [f"{p['probe']:02d} ({_role(p)})" for p, _ in shown],
                "result": [RESULT[p["passed"]] for p, _ in shown],
            }
        )
        fig = new_figure(f"{label} against load", x_label, label, height=260)
        dots = fig.scatter("x", "y", source=source, color="color", size=10)
        if threshold is not None:
            fig.line(
                [min(source.data["x"]), max(source.data["x"])], [threshold, threshold],
                color="#d62728", line_dash="dashed", line_width=2, legend_label="SLO",
            )  # fmt: skip
        if holds is not None:
            fig.add_layout(Span(location=holds, dimension="height", line_dash="dotted"))
        zero_based(fig)
        hover(fig, [dots], [("probe", "@probe"), ("load", "@x"), (label, "@y{0,0.0}"),
                            ("result", "@result")])  # fmt: skip
        finish_legend(fig, "top_left")
        out[key] = fig
    return out


def render_html(record: dict[str, Any], folder: Path | None = None) -> str:
    """The search's report.html: the answer, its details, the probes, the plots against
    load, one self-contained file (Bokeh's script inlined, as report.html's).

    Each probe links to its report.html where `folder` (the search's) holds one, else to
    its summary.json (probes skip their HTML unless `--probe-html`)."""
    from turnbench.report.figures import page
    from turnbench.report.html import document, escape

    answer = record.get("answer") or {}
    table = probes_table(record)
    cells = []
    for row, probe in zip(table.rows, record["probes"], strict=True):
        name = "report.html"
        if folder is None or not (folder / probe["folder"] / name).exists():
            name = "summary.json"
        link = f"<a href='{escape(probe['folder'])}/{name}'>{escape(probe['folder'])}</a>"
        tail = "".join(f"<td>{escape(c)}</td>" for c in row[1:])
        cells.append(f"<tr><td>{link}</td>{tail}</tr>")
    script, divs = page(figures(record))
    body = [
        f"<h1>turnbench capacity: {escape(record['name'])}</h1>",
        f"<p class='meta'>Target <code>{escape(record['target'])}</code>; "
        f"{escape(record['criteria']['description'])}; "
        f"{len(record['probes'])} probes in {record['elapsed_s']:.0f} s.</p>",
        f"<p class='answer' style='font-size:1.2rem;font-weight:bold'>"
        f"{escape(answer.get('sentence', 'no answer'))}</p>",
        *(f"<div class='warn'>{escape(d)}</div>" for d in answer.get("details", [])),
        f"<h2>{escape(table.title)}</h2><table><tr>",
        *(f"<th>{escape(h)}</th>" for h in table.header or []),
        "</tr>",
        *cells,
        "</table><h2>Against load</h2>",
        *(f"<div class='panel' id='panel-{key}'>{div}</div>" for key, div in divs.items()),
    ]
    return document(f"turnbench capacity {record['name']}", body, script)
