"""The report's run-level figures (Bokeh): throughput, concurrency, schedule lag, errors and
TTFT over run time on one shared x axis, then latency by turn, by context and as CDFs.

Why these: over time answers "when did it go wrong, and was the client keeping up?"; by turn
and by context answer "does a longer conversation cost what it should?"; the CDFs from the
send and from the intended send show how much of the latency was the client's own backlog.
Each returns None when the run has nothing to draw for it, so the page leaves it out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from bokeh.models import ColumnDataSource, DataRange1d, LinearAxis

from turnbench.metrics.model import TurnRow
from turnbench.report.figures import (
    FAILED,
    MUTED,
    OK,
    PALETTE,
    TOKENS,
    Span,
    finish_legend,
    hover,
    hover_steps,
    new_figure,
    rebin,
    shade,
    zero_based,
)

TIME = "run time (s)"


def throughput(points: list[dict[str, Any]], spans: list[Span], x_range: Any) -> Any:
    """Successful and failed requests per second, and output tokens per second (right axis)."""
    if not points:
        return None
    cols = rebin(
        np.array([p["t"] for p in points], dtype=float),
        {
            k: np.array([p[k] for p in points], dtype=float)
            for k in ("ok", "failed", "output_tokens")
        },
    )
    src = ColumnDataSource(cols)
    p = new_figure(
        "Throughput over time (by completion second)", TIME, "requests/s", x_range=x_range
    )
    shade(p, spans)
    ok = p.line("t", "ok", source=src, color=OK, line_width=2, legend_label="ok requests/s")
    bad = p.line(
        "t", "failed", source=src, color=FAILED, line_width=2, legend_label="failed or cancelled/s"
    )
    p.y_range = DataRange1d(start=0, renderers=[ok, bad])
    p.extra_y_ranges = {"tokens": DataRange1d(start=0)}
    p.add_layout(LinearAxis(y_range_name="tokens", axis_label="output tokens/s"), "right")
    tok = p.line(
        "t",
        "output_tokens",
        source=src,
        color=TOKENS,
        alpha=0.7,
        y_range_name="tokens",
        legend_label="output tokens/s",
    )
    p.extra_y_ranges["tokens"].renderers = [tok]
    hover(
        p,
        [ok],
        [
            ("t", "@t{0} s"),
            ("ok", "@ok{0.0}/s"),
            ("failed", "@failed{0.0}/s"),
            ("output", "@output_tokens{0,0} tok/s"),
        ],
        mode="vline",
    )
    finish_legend(p)
    return p


def concurrency(data: dict[str, Any], spans: list[Span], x_range: Any) -> Any:
    """Requests in flight, sessions open (agent tasks open too, in an agent run) and the
    users configured over time (each stage's own, a step where a stage changes them)."""
    if not len(data["t"]):
        return None
    src = ColumnDataSource(data)
    p = new_figure("Concurrency over time", TIME, "count", height=260, x_range=x_range)
    shade(p, spans)
    series = [
        ("in_flight", OK, "requests in flight"),
        ("sessions", PALETTE[1], "sessions open"),
        ("tasks", PALETTE[2], "agent tasks open"),
    ]
    for key, colour, label in series:
        if key in data:
            p.step(
                "t", key, source=src, mode="after", color=colour, line_width=2,
                legend_label=label,
            )  # fmt: skip
    if "users" in data:
        p.step(
            "t", "users", source=src, mode="after", color=MUTED, line_dash="dashed",
            line_width=2, legend_label="users configured",
        )  # fmt: skip
    zero_based(p)
    hover_steps(
        p,
        src,
        "t",
        "in_flight",
        [
            ("t", "@t{0.0} s"),
            ("in flight", "@in_flight"),
            ("sessions", "@sessions"),
            *([("agent tasks", "@tasks")] if "tasks" in data else []),
            *([("users", "@users")] if "users" in data else []),
        ],
    )
    finish_legend(p)
    return p


def schedule_lag(data: dict[str, Any], spans: list[Span], x_range: Any) -> Any:
    """Sent − intended by send time: the client (or a cap) falling behind the schedule."""
    if not len(data["t"]):
        return None
    src = ColumnDataSource(data)
    p = new_figure(
        "Schedule lag over time (sent − intended)", TIME, "ms", height=240, x_range=x_range
    )
    shade(p, spans)
    med = p.line("t", "p50", source=src, color=OK, line_width=2, legend_label="p50")
    p.line("t", "p99", source=src, color=PALETTE[1], line_width=2, legend_label="p99")
    p.line("t", "max", source=src, color=FAILED, alpha=0.5, legend_label="max")
    zero_based(p)
    hover(
        p,
        [med],
        [
            ("t", "@t{0.0} s"),
            ("p50", "@p50{0.00} ms"),
            ("p99", "@p99{0.00} ms"),
            ("max", "@max{0.00} ms"),
        ],
        mode="vline",
    )
    finish_legend(p)
    return p


def errors(
    data: dict[str, dict[str, list[float]]], width: float, spans: list[Span], x_range: Any
) -> Any:
    """Failed and cancelled attempts per time bin, one series per error kind."""
    if not data:
        return None
    p = new_figure(
        "Errors over time, by kind",
        TIME,
        f"attempts per {width:.3g} s",
        height=240,
        x_range=x_range,
    )
    shade(p, spans)
    drawn = []
    for i, (kind, series) in enumerate(data.items()):
        mid = [t + width / 2 for t in series["t"]]
        src = ColumnDataSource({**series, "mid": mid, "kind": [kind] * len(mid)})
        colour = PALETTE[(i + 3) % len(PALETTE)]
        drawn.append(
            p.vbar(
                x="mid",
                top="count",
                width=width,
                source=src,
                color=colour,
                alpha=0.6,
                legend_label=kind,
            )
        )
    zero_based(p)
    hover(p, drawn, [("kind", "@kind"), ("from", "@t{0.00} s"), ("attempts", "@count")])
    finish_legend(p)
    return p


def ttft_over_time(samples: list[tuple[float, float, int]], spans: list[Span], x_range: Any) -> Any:
    """Each sampled request's TTFT at its send time; turn 1 apart from later turns."""
    if not samples:
        return None
    p = new_figure("TTFT over time (sampled requests)", TIME, "TTFT (ms)", x_range=x_range)
    shade(p, spans)
    rows = np.asarray(samples, dtype=float)
    first = rows[:, 2] == 1
    drawn = []
    for label, colour, keep in (("turn 1", PALETTE[1], first), ("turns ≥ 2", OK, ~first)):
        if keep.any():
            group = rows[keep]
            src = ColumnDataSource({"t": group[:, 0], "ttft": group[:, 1], "turn": group[:, 2]})
            drawn.append(
                p.scatter(
                    "t", "ttft", source=src, size=4, alpha=0.5, color=colour, legend_label=label
                )
            )
    zero_based(p)
    hover(p, drawn, [("sent", "@t{0.00} s"), ("TTFT", "@ttft{0.0} ms"), ("turn", "@turn")])
    finish_legend(p)
    return p


def per_turn(turns: list[TurnRow]) -> Any:
    """TTFT and E2E percentiles by turn index (E2E on the right axis, dashed)."""
    rows = [t for t in turns if t.ttft_ms.count]
    if not rows:
        return None
    cols: dict[str, Any] = {
        "turn": [t.turn for t in rows],
        "n": [t.ok for t in rows],
        "failed": [t.failed for t in rows],
    }
    for metric in ("ttft_ms", "e2e_ms"):
        for q in ("p50", "p90", "p99"):
            cols[f"{metric}_{q}"] = [getattr(t, metric).at(q) for t in rows]
    src = ColumnDataSource(cols)
    p = new_figure("TTFT and E2E by turn index", "turn", "TTFT (ms)")
    ttft = []
    for q, colour in (("p50", OK), ("p90", PALETTE[1]), ("p99", FAILED)):
        ttft.append(
            p.line(
                "turn",
                f"ttft_ms_{q}",
                source=src,
                color=colour,
                line_width=2,
                legend_label=f"TTFT {q}",
            )
        )
        p.scatter(
            "turn", f"ttft_ms_{q}", source=src, color=colour, size=5, legend_label=f"TTFT {q}"
        )
    p.y_range = DataRange1d(start=0, renderers=ttft)
    p.extra_y_ranges = {"e2e": DataRange1d(start=0)}
    p.add_layout(LinearAxis(y_range_name="e2e", axis_label="E2E (ms)"), "right")
    e2e = [
        p.line(
            "turn",
            f"e2e_ms_{q}",
            source=src,
            color=colour,
            line_dash="dashed",
            alpha=0.8,
            y_range_name="e2e",
            legend_label=f"E2E {q}",
        )
        for q, colour in (("p50", OK), ("p90", PALETTE[1]), ("p99", FAILED))
    ]
    p.extra_y_ranges["e2e"].renderers = e2e
    p.xaxis.ticker.min_interval = 1
    hover(
        p,
        ttft[:1],
        [
            ("turn", "@turn (@n ok, @failed failed)"),
            (
                "TTFT p50 / p90 / p99",
                "@ttft_ms_p50{0.0} / @ttft_ms_p90{0.0} / @ttft_ms_p99{0.0} ms",
            ),
            ("E2E p50 / p90 / p99", "@e2e_ms_p50{0} / @e2e_ms_p90{0} / @e2e_ms_p99{0} ms"),
        ],
        mode="vline",
    )
    finish_legend(p)
    return p


def ttft_by_context(data: dict[str, Any]) -> Any:
    """Sampled requests' TTFT against their prompt tokens, coloured first turn / later."""
    if not len(data["prompt_tokens"]):
        return None
    turn = np.asarray(data["turn"])
    p = new_figure(
        f"TTFT against context length ({len(turn):,} of {data['of']:,} requests)",
        "prompt tokens",
        "TTFT (ms)",
    )
    drawn = []
    for label, colour, keep in (("turn 1", PALETTE[1], turn == 1), ("turns ≥ 2", OK, turn != 1)):
        if keep.any():
            src = ColumnDataSource(
                {
                    "prompt": np.asarray(data["prompt_tokens"])[keep],
                    "ttft": np.asarray(data["ttft_ms"])[keep],
                    "turn": turn[keep],
                }
            )
            drawn.append(
                p.scatter(
                    "prompt",
                    "ttft",
                    source=src,
                    size=4,
                    alpha=0.5,
                    color=colour,
                    legend_label=label,
                )
            )
    zero_based(p)
    hover(
        p, drawn, [("prompt", "@prompt{0,0} tokens"), ("TTFT", "@ttft{0.0} ms"), ("turn", "@turn")]
    )
    finish_legend(p)
    return p


def cdfs(cdf: dict[str, list[tuple[float, float]]], metric: str) -> Any:
    """One latency's CDF from the send (solid) and from the intended send (dashed)."""
    if not cdf.get(f"{metric}_ms"):
        return None
    title = {"ttft": "TTFT", "e2e": "E2E"}[metric]
    p = new_figure(f"{title} CDF", "ms", "fraction of requests", height=280)
    drawn = []
    for suffix, label, dash, colour in (
        ("_ms", "from send", "solid", OK),
        ("_from_intended_ms", "from intended send", "dashed", PALETTE[1]),
    ):
        points = cdf.get(metric + suffix) or []
        if points:
            src = ColumnDataSource({"ms": [q[0] for q in points], "f": [q[1] for q in points]})
            drawn.append(
                p.line(
                    "ms",
                    "f",
                    source=src,
                    line_dash=dash,
                    color=colour,
                    line_width=2,
                    legend_label=label,
                )
            )
    hover(p, drawn, [("latency", "@ms{0.0} ms"), ("fraction", "@f{0.000}")], mode="vline")
    finish_legend(p, "bottom_right")
    return p
