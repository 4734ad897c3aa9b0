"""The console report: per-request, per-turn and per-conversation tables from a summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def fmt(value: Any, digits: int = 1) -> str:
    """A number for a table: thousands separators, `-` for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


REQUEST_ROWS = (
    ("TTFT", "ttft_ms"),
    ("TTFT from intended", "ttft_from_intended_ms"),
    ("E2E", "e2e_ms"),
    ("E2E from intended", "e2e_from_intended_ms"),
    ("TPOT", "tpot_ms"),
    ("ITL", "itl_ms"),
    ("NTPOT", "ntpot_ms"),
    ("Schedule lag", "schedule_lag_ms"),
)


def request_table(summary: dict[str, Any]) -> Table:
    """Latency distributions of successful requests, in milliseconds."""
    req = summary["requests"]
    table = Table(title="Per request (ms, successful requests)", title_justify="left")
    for col in ("metric", "count", "mean", "p50", "p90", "p95", "p99", "max"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for label, key in REQUEST_ROWS:
        d = req[key]
        table.add_row(
            label,
            fmt(d["count"]),
            *(fmt(d[k]) for k in ("mean", "p50", "p90", "p95", "p99", "max")),
        )
    return table


def turn_table(summary: dict[str, Any]) -> Table:
    """Per turn index: where prefix caching shows."""
    table = Table(title="Per turn", title_justify="left")
    for col in (
        "turn",
        "ok",
        "failed",
        "TTFT p50",
        "TTFT p90",
        "TTFT p99",
        "E2E p50",
        "E2E p99",
        "prompt tok",
        "cached tok",
        "cached %",
    ):
        table.add_column(col, justify="right")
    for t in summary["per_turn"]:
        ratio = t["cached_ratio"]
        table.add_row(
            str(t["turn"]),
            fmt(t["ok"]),
            fmt(t["failed"]),
            fmt(t["ttft_ms"]["p50"]),
            fmt(t["ttft_ms"]["p90"]),
            fmt(t["ttft_ms"]["p99"]),
            fmt(t["e2e_ms"]["p50"]),
            fmt(t["e2e_ms"]["p99"]),
            fmt(t["mean_prompt_tokens"], 0),
            fmt(t["mean_cached_tokens"], 0),
            fmt(ratio * 100 if ratio is not None else None),
        )
    return table


def conversation_table(summary: dict[str, Any]) -> Table:
    """Per conversation: durations, turns, outcomes."""
    conv = summary["per_conversation"]
    table = Table(title="Per conversation", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    d = conv["duration_s"]
    t = conv["turns_completed"]
    rate = conv["turn_success_rate"]
    table.add_row("sessions", fmt(conv["sessions"]))
    for outcome, n in conv["outcomes"].items():
        table.add_row(f"  {outcome}", fmt(n))
    table.add_row("sessions with every turn ok", fmt(conv["sessions_fully_ok"]))
    table.add_row(
        "duration s (p50 / p90 / max)",
        f"{fmt(d['p50'], 2)} / {fmt(d['p90'], 2)} / {fmt(d['max'], 2)}",
    )
    table.add_row("turns completed (mean / max)", f"{fmt(t['mean'], 2)} / {fmt(t['max'])}")
    table.add_row("turn success rate", fmt(rate * 100 if rate is not None else None) + " %")
    table.add_row("messages dropped by truncation", fmt(conv["dropped_messages"]))
    return table


def headline(summary: dict[str, Any]) -> Table:
    """Counts, throughput and errors on one small table."""
    req = summary["requests"]
    thr = req["throughput"]
    table = Table(title="Run", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    run = summary["run"]
    served = escape(f"{run.get('target')} ({run.get('model')}, {run.get('api')})")
    table.add_row("target", served)  # the server chose the model name: never markup
    table.add_row(
        "attempts (ok / failed / cancelled / warm-up)",
        f"{req['ok']} / {req['failed']} / {req['cancelled']} / {req['warmup']}",
    )
    table.add_row("measured window s", fmt(req["window_s"], 2))
    table.add_row("requests/s (successful)", fmt(thr["requests_per_s"], 2))
    table.add_row("output tokens/s", fmt(thr["output_tokens_per_s"], 1))
    ratio = req["cached_token_ratio"]
    table.add_row("cached prompt tokens", fmt(ratio * 100 if ratio is not None else None) + " %")
    for kind, n in summary["errors"].items():
        table.add_row(f"error: {kind}", fmt(n))
    return table


def print_report(summary: dict[str, Any], console: Console | None = None) -> None:
    """Print the whole console report, verdict notes first."""
    console = console or Console()
    for note in summary["verdict"]["notes"]:
        console.print(f"[bold yellow]warning:[/] {note}")
    console.print(headline(summary))
    console.print(request_table(summary))
    console.print(turn_table(summary))
    console.print(conversation_table(summary))
