"""The report's tables as plain rows of text, shown by the console and the HTML report alike.

Why one place: the console and report.html must never disagree about a number or a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from turnbench.metrics.model import Summary
from turnbench.metrics.outages_model import Outage
from turnbench.metrics.stages_model import Stage

STATS = ("mean", "p50", "p90", "p95", "p99", "max")

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


@dataclass(frozen=True)
class TextTable:
    """A titled table of strings; `header` is None for a two-column list of facts."""

    title: str
    header: list[str] | None
    rows: list[list[str]]


def fmt(value: Any, digits: int = 1) -> str:
    """A number for a table: thousands separators, `-` for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pct(ratio: float | None) -> str:
    return fmt(ratio * 100 if ratio is not None else None)


ARRIVALS_LABELS = {
    "duration": "arrivals s (to the duration limit)",
    "last_session_start": "arrivals s (to the last session start)",
    None: "arrivals s",
}


def timeline(summary: Summary) -> list[list[str]]:
    """Warm-up, arrivals, drain and the window they leave, each labelled with where it ends:
    a window longer or shorter than the duration the user asked for then explains itself."""
    phases = summary.timeline
    return [
        ["warm-up s (not measured)", fmt(phases.warmup_s, 2)],
        [ARRIVALS_LABELS[phases.arrivals_end], fmt(phases.arrivals_s, 2)],
        ["drain s (to the last attempt's end)", fmt(phases.drain_s, 2)],
        ["measured window s (first send to last ok end)", fmt(summary.requests.window_s, 2)],
    ]


def headline(summary: Summary) -> TextTable:
    """Counts, the run's phases and window, throughput, cached tokens and errors."""
    req = summary.requests
    thr = req.throughput
    run = summary.run
    rows = [
        ["target", f"{run.target} ({run.model}, {run.api})"],
        [
            "attempts ok / failed / cancelled / warm-up",
            f"{req.ok} / {req.failed} / {req.cancelled} / {req.warmup}",
        ],
        *timeline(summary),
        ["requests/s (successful)", fmt(thr.requests_per_s, 2)],
        ["output tokens/s", fmt(thr.output_tokens_per_s, 1)],
        ["cached prompt tokens %", _pct(req.cached_token_ratio)],
    ]
    rows += [[f"error: {kind}", fmt(n)] for kind, n in summary.errors.items()]
    return TextTable("Run", None, rows)


def _outcome(outage: Outage) -> str:
    if outage.gave_up:
        return "gave up"
    return "back" if outage.back else "still down at the end"


def outages(summary: Summary) -> TextTable | None:
    """When the target could not be reached, what it cost and how long throughput took to
    come back; None for a run without outages (most runs), so it takes no room."""
    windows = summary.outages
    if not windows:
        return None
    header = [
        "start s",
        "end s",
        "duration s",
        "attempts failed",
        "turns / sessions",
        "recovery s",
        "outcome",
    ]
    rows = [
        [
            fmt(o.start_s, 2),
            fmt(o.end_s, 2),
            fmt(o.duration_s, 2),
            fmt(o.failed_attempts),
            f"{fmt(o.turns_affected)} / {fmt(o.sessions_affected)}",
            fmt(o.recovery_s, 2),
            _outcome(o),
        ]
        for o in windows
    ]
    title = f"Outages (target unreachable {fmt(summary.downtime_s, 2)} s in all)"
    return TextTable(title, header, rows)


def unreachable_problem(summary: Summary) -> str | None:
    """The line that says the run ended because the target never came back, so no one reads
    its latencies as those of the whole run; None for a run that ended otherwise."""
    if summary.run.end_reason != "target_unreachable":
        return None
    windows = [o for o in summary.outages if o.gave_up] or summary.outages
    after = (
        f" after {fmt(windows[-1].duration_s, 1)} s (unreachable from "
        f"{fmt(windows[-1].start_s, 2)} s)"
        if windows
        else ""
    )
    last_ok = summary.timeline.window_end_s
    last = (
        f"the last successful request ended at {fmt(last_ok, 2)} s"
        if last_ok is not None
        else "no request succeeded"
    )
    return f"the target never came back{after}; {last}; the latencies cover only what ran before"


def requests(summary: Summary) -> TextTable:
    """Latency distributions of successful requests, in milliseconds."""
    req = summary.requests
    rows = [
        [label, fmt(getattr(req, key).count), *(fmt(getattr(req, key).at(k)) for k in STATS)]
        for label, key in REQUEST_ROWS
    ]
    return TextTable("Per request (ms, successful requests)", ["metric", "count", *STATS], rows)


def turns(summary: Summary) -> TextTable:
    """Per turn index: where prefix caching shows."""
    header = [
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
    ]
    rows = [
        [
            str(t.turn),
            fmt(t.ok),
            fmt(t.failed),
            fmt(t.ttft_ms.p50),
            fmt(t.ttft_ms.p90),
            fmt(t.ttft_ms.p99),
            fmt(t.e2e_ms.p50),
            fmt(t.e2e_ms.p99),
            fmt(t.mean_prompt_tokens, 0),
            fmt(t.mean_cached_tokens, 0),
            _pct(t.cached_ratio),
        ]
        for t in summary.per_turn
    ]
    return TextTable("Per turn", header, rows)


def conversations(summary: Summary) -> TextTable:
    """Per conversation: outcomes, durations, turns."""
    conv = summary.per_conversation
    d = conv.duration_s
    t = conv.turns_completed
    rows = [["sessions", fmt(conv.sessions)]]
    rows += [[f"  {outcome}", fmt(n)] for outcome, n in conv.outcomes.items()]
    rows += [
        ["sessions with every turn ok", fmt(conv.sessions_fully_ok)],
        [
            "duration s (p50 / p90 / max)",
            f"{fmt(d.p50, 2)} / {fmt(d.p90, 2)} / {fmt(d.max, 2)}",
        ],
        ["turns completed (mean / max)", f"{fmt(t.mean, 2)} / {fmt(t.max)}"],
        ["turn success rate %", _pct(conv.turn_success_rate)],
        ["messages dropped by truncation", fmt(conv.dropped_messages)],
    ]
    return TextTable("Per conversation", None, rows)


def _apart(stayed: str, moved: str) -> str:
    return f"{stayed} / {moved}"


def affinity(summary: Summary) -> TextTable | None:
    """Whether sessions stuck to their replica, and what moving cost in cache hits and TTFT;
    None when the server named no replica (`summary.affinity` null), so it takes no room."""
    aff = summary.affinity
    if not aff:
        return None
    stayed, moved = aff.stayed, aff.moved
    changes = aff.replica_changes
    sessions = aff.sessions
    never = aff.sessions_never_moved
    share = f" ({_pct(never / sessions)} %)" if sessions else ""
    rows = [
        ["replicas that served", fmt(aff.replicas)],
        ["sessions with a later turn", fmt(sessions)],
        ["sessions that never moved", f"{fmt(never)}{share}"],
        [
            "replica changes per session (mean / max)",
            _apart(fmt(changes.mean, 2), fmt(changes.max, 0)),
        ],
        ["migration rate % (later turns that moved)", _pct(aff.migration_rate)],
        ["later turns stayed / moved", _apart(fmt(stayed.turns), fmt(moved.turns))],
        [
            "cached prompt tokens % stayed / moved",
            _apart(_pct(stayed.cached_ratio), _pct(moved.cached_ratio)),
        ],
        [
            "TTFT p50 ms stayed / moved",
            _apart(fmt(stayed.ttft_ms.p50), fmt(moved.ttft_ms.p50)),
        ],
    ]
    return TextTable("Session affinity", None, rows)


def stage_load(mode: str, level: float | None) -> str:
    """A stage's (or a sweep point's) load in a few characters: `4 users`, `2.5/s`."""
    if level is None:
        return mode
    return f"{level:g}/s" if mode == "session-rate" else f"{level:g} user{'s' * (level != 1)}"


def stages(summary: Summary) -> TextTable | None:
    """One row per stage of a staged run: its load, its steady-state window, and its
    figures over that window (and its request goodput %, a column per SLO tier); None for a
    run with no `stages:`."""
    points = summary.stages or []
    if not points:
        return None
    tiers = list(points[0].goodput or {})
    rows = [
        [
            p.name,
            stage_load(p.mode, p.level),
            f"{p.start_s:.1f}-{p.end_s:.1f}",
            f"{p.window.start_s:.1f}-{p.window.end_s:.1f}",
            fmt(p.requests.ok),
            fmt(p.requests.failed + p.requests.cancelled),
            fmt(p.requests_per_s, 2),
            fmt(p.output_tokens_per_s),
            fmt(p.output_tokens_per_s_per_user),
            fmt(p.ttft_ms.p90),
            fmt(p.tpot_ms.p90),
            *(good_pct(p, tier) for tier in tiers),
        ]
        for p in points
    ]
    header = [
        "stage", "load", "time s", "window s", "ok", "failed/cut", "req/s", "out tok/s",
        "tok/s/user p50", "TTFT p90 ms", "TPOT p90 ms", *(f"good % {t}" for t in tiers),
    ]  # fmt: skip
    return TextTable("Stages (figures over each stage's steady-state window)", header, rows)


def good_pct(stage: Stage, tier: str) -> str:
    """The stage's (or sweep point's) request goodput in a tier, % of its judged requests."""
    ratio = (stage.goodput or {})[tier].requests.all.ratio
    return "-" if ratio is None else f"{100 * ratio:.1f}"


def frontier(summary: Summary) -> TextTable | None:
    """The Pareto frontier of the stages: no other stage beats one of them on both tokens/s
    per user and tokens/s in total; None with fewer than two stages."""
    front = summary.frontier or []
    if not front:
        return None
    rows = [
        [p.name, stage_load(p.mode, p.level), fmt(p.output_tokens_per_s),
         fmt(p.output_tokens_per_s_per_user)]
        for p in front
    ]  # fmt: skip
    header = ["stage", "load", "out tok/s", "tok/s/user p50"]
    return TextTable("Pareto frontier (tokens/s per user against in total)", header, rows)


def all_tables(summary: Summary) -> list[TextTable]:
    """Every table of the report, in order (the Outages, Stages, Pareto frontier, SLOs,
    Goodput, Agent tasks, Session affinity, Prefix cache and Server tables only when there is
    something to show)."""
    from turnbench.report.agents import agent_tables  # they build on this module's tables
    from turnbench.report.cache import cache_tables
    from turnbench.report.goodput import goodput_tables
    from turnbench.report.server import server_table

    down = outages(summary)
    sticky = affinity(summary)
    server = server_table(summary)
    staged = [t for t in (stages(summary), frontier(summary)) if t is not None]
    return [
        headline(summary),
        *([down] if down else []),
        *staged,
        requests(summary),
        turns(summary),
        conversations(summary),
        *goodput_tables(summary),
        *agent_tables(summary),
        *([sticky] if sticky else []),
        *cache_tables(summary),
        *([server] if server else []),
    ]
