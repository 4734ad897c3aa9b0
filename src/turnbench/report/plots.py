"""The report's plots as PNG images (matplotlib, no display needed).

Why PNG inlined in the HTML: the report is one file that opens offline anywhere, with no
JavaScript and nothing fetched.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

_SIZE = (7.5, 3.6)
Span = tuple[float, float]
"""An outage on the run clock, seconds: (start, end), end the run's end if it never ended."""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def outage_spans(outages: list[dict[str, Any]]) -> list[Span]:
    """The summary's outages as spans; one still open at the end reaches the run's end."""
    return [(o["start_s"], o["start_s"] + o["duration_s"]) for o in outages]


def _shade(ax: Any, spans: list[Span]) -> None:
    """Mark outages on a time axis, so a dip or a gap explains itself."""
    for i, (start, end) in enumerate(spans):
        ax.axvspan(
            start, end, color="tab:red", alpha=0.15, label="target unreachable" if not i else None
        )


def throughput(points: list[dict[str, Any]], spans: list[Span]) -> bytes | None:
    """Successful and failed requests per second, and output tokens per second."""
    if not points:
        return None
    fig, ax = plt.subplots(figsize=_SIZE)
    _shade(ax, spans)
    t = [p["t"] for p in points]
    ax.plot(t, [p["ok"] for p in points], label="ok requests/s", color="tab:blue")
    ax.plot(t, [p["failed"] for p in points], label="failed or cancelled/s", color="tab:red")
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    ax2.plot(
        t,
        [p["output_tokens"] for p in points],
        label="output tokens/s",
        color="tab:green",
        alpha=0.6,
    )
    ax2.set_ylabel("output tokens/s")
    ax.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title("Throughput over time (by completion second)")
    return _png(fig)


def per_turn(turns: list[dict[str, Any]]) -> bytes | None:
    """TTFT percentiles and prompt / cached tokens by turn index."""
    rows = [t for t in turns if t["ttft_ms"]["count"]]
    if not rows:
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(_SIZE[0], _SIZE[1]))
    x = [t["turn"] for t in rows]
    for key, style in (("p50", "-o"), ("p90", "--o"), ("p99", ":o")):
        ax.plot(x, [t["ttft_ms"][key] for t in rows], style, label=f"TTFT {key}", markersize=3)
    ax.set_xlabel("turn")
    ax.set_ylabel("ms")
    ax.set_title("TTFT by turn")
    ax.legend(fontsize=8)
    ax2.bar(
        x, [t["mean_prompt_tokens"] or 0 for t in rows], label="prompt tokens", color="tab:gray"
    )
    ax2.bar(
        x,
        [t["mean_cached_tokens"] or 0 for t in rows],
        label="cached tokens",
        color="tab:green",
        alpha=0.8,
    )
    ax2.set_xlabel("turn")
    ax2.set_title("Mean prompt and cached tokens")
    ax2.legend(fontsize=8)
    return _png(fig)


def cdfs(cdf: dict[str, list[tuple[float, float]]]) -> bytes | None:
    """Latency CDFs, from the actual send and from the intended send."""
    if not cdf.get("e2e_ms"):
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=_SIZE)
    for axis, key, title in ((ax, "ttft", "TTFT"), (ax2, "e2e", "E2E")):
        for suffix, style in (("_ms", "-"), ("_from_intended_ms", "--")):
            points = cdf.get(key + suffix) or []
            if points:
                axis.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    label="from send" if suffix == "_ms" else "from intended send",
                )
        axis.set_xlabel("ms")
        axis.set_ylabel("fraction of requests")
        axis.set_title(f"{title} CDF")
        axis.legend(fontsize=8)
    return _png(fig)


def ttft_over_time(samples: list[tuple[float, float, int]], spans: list[Span]) -> bytes | None:
    """Each request's TTFT at its send time; turn 1 apart from later turns."""
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=_SIZE)
    _shade(ax, spans)
    first = [s for s in samples if s[2] == 1]
    later = [s for s in samples if s[2] != 1]
    for group, label, color in ((first, "turn 1", "tab:orange"), (later, "turns ≥ 2", "tab:blue")):
        if group:
            ax.scatter(
                [s[0] for s in group],
                [s[1] for s in group],
                s=4,
                alpha=0.5,
                label=label,
                color=color,
            )
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title("TTFT over time")
    ax.legend(fontsize=8)
    return _png(fig)
