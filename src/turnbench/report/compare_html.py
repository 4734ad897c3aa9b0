"""The comparison as one self-contained HTML page: the console's tables and overlaid plots of
every run (per-turn TTFT, TTFT and E2E CDFs, throughput over time), PNGs inlined.

Why like report.html: it opens offline from the file and fetches nothing; every text that came
from a run (folder names, config values, error kinds) is escaped.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from turnbench.report.compare import Comparison
from turnbench.report.compare_tables import LEGEND, all_tables
from turnbench.report.html import CSS, escape, table_html

_SIZE = (7.5, 3.6)


def _png(fig: Figure, alt: str) -> str:
    """The figure as an inline <img>."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<p><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></p>'


def per_turn_plot(c: Comparison) -> str:
    """TTFT p50 (solid) and p90 (dashed) by turn index, one colour per run."""
    fig, ax = plt.subplots(figsize=_SIZE)
    drawn = False
    for run in c.runs:
        rows = [t for t in run.summary["per_turn"] if t["ttft_ms"]["count"]]
        if not rows:
            continue
        x = [t["turn"] for t in rows]
        (line,) = ax.plot(
            x, [t["ttft_ms"]["p50"] for t in rows], "-o", ms=3, label=f"{run.letter} p50"
        )
        ax.plot(
            x,
            [t["ttft_ms"]["p90"] for t in rows],
            "--o",
            ms=3,
            color=line.get_color(),
            label=f"{run.letter} p90",
        )
        drawn = True
    if not drawn:
        plt.close(fig)
        return ""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("turn")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT by turn index")
    ax.legend(fontsize=8)
    return _png(fig, "TTFT p50 and p90 by turn index, every run")


def cdf_plot(c: Comparison, series: list[dict[str, Any]]) -> str:
    """TTFT and E2E CDFs (from the send), one line per run."""
    if not any(s["cdf"].get("e2e_ms") for s in series):
        return ""
    fig, axes = plt.subplots(1, 2, figsize=_SIZE)
    for axis, key, title in zip(axes, ("ttft_ms", "e2e_ms"), ("TTFT", "E2E"), strict=True):
        for run, s in zip(c.runs, series, strict=True):
            points = s["cdf"].get(key) or []
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], label=run.letter)
        axis.set_xlabel("ms")
        axis.set_ylabel("fraction of requests")
        axis.set_title(f"{title} CDF")
        axis.legend(fontsize=8)
    return _png(fig, "TTFT and E2E CDFs, every run")


def throughput_plot(c: Comparison, series: list[dict[str, Any]]) -> str:
    """Successful requests per second over each run's own time, one line per run."""
    if not any(s["throughput"] for s in series):
        return ""
    fig, ax = plt.subplots(figsize=_SIZE)
    for run, s in zip(c.runs, series, strict=True):
        points = s["throughput"]
        if points:
            ax.plot([p["t"] for p in points], [p["ok"] for p in points], label=run.letter)
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("ok requests/s")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput over time (by completion second)")
    ax.legend(fontsize=8)
    return _png(fig, "throughput over time, every run")


def render(c: Comparison, series: list[dict[str, Any]]) -> str:
    """The whole page; `series` are the runs' `metrics.series` (plots), in the runs' order."""
    letters = ", ".join(f"{r.letter}: {r.path.name}" for r in c.runs)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>turnbench compare {escape(letters)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>turnbench compare</h1><p>{escape(letters)}</p>",
    ]
    parts += [f"<div class='warn'>note: {escape(note)}</div>" for note in c.notes]
    parts += [table_html(t) for t in all_tables(c)]
    parts.append(f"<p>{escape(LEGEND)}</p>")
    if not c.config_diff:
        parts.append("<p>Configs: the same in every run.</p>")
    parts.append("<h2>Plots</h2>")
    parts += [per_turn_plot(c), cdf_plot(c, series), throughput_plot(c, series)]
    parts.append("</body></html>")
    return "".join(parts)
