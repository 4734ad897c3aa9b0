"""The report's prefix-cache tables: ideal against realised, per turn, and against idle time.

Why three: the first answers issue #14's questions in a line each (how much could have been
cached, how much was, when it stopped, how long an idle conversation is kept); the other two
are the evidence behind those lines.
"""

from __future__ import annotations

import numpy as np

from turnbench.metrics.cache_model import CacheTurn, Cliff, IdleBin, Retention, WarmStart
from turnbench.metrics.model import Summary
from turnbench.report.tables import TextTable, fmt

MAX_TURN_ROWS = 24
"""A run of more turns shows the first half of these and the rest evenly spread to the last."""
NOT_REPORTED = "not reported by the server"


def _pct(value: float | None) -> str:
    return fmt(value * 100 if value is not None else None)


def _cliff(cliff: Cliff | None) -> str:
    if cliff is None:
        return "none"
    return (
        f"at {fmt(cliff.time_s, 1)} s: kept {_pct(cliff.kept_before)} % before, "
        f"{_pct(cliff.kept_after)} % after; {fmt(cliff.live_sessions)} sessions live"
    )


def retention_answer(retention: Retention | None) -> str:
    """How long the server keeps an idle conversation's prefix, in words."""
    if retention is None:
        return "-"
    through, bound = retention.kept_through_s, retention.bound
    if through is None:
        return "-"
    seconds = fmt(through, 1 if through >= 0.1 else 3)
    if bound == "about":
        return f"about {seconds} s of idle time"
    if bound == "under":
        return f"under {seconds} s of idle time (lost even after the shortest idle)"
    return f"at least {seconds} s of idle time (the longest idle seen; none lost)"


def _warm(warm: WarmStart) -> str:
    if not warm.checked:
        return "cannot be: the run was salted (cache.salt)"
    seen = f"{fmt(warm.with_cached)} of {fmt(warm.requests)} requests"
    if warm.warm:
        return f"yes: {seen} before the first reply found {fmt(warm.cached_tokens)} tokens"
    return f"no ({seen} before the first reply found cached tokens)"


def cache_table(summary: Summary) -> TextTable | None:
    """The run's prefix cache in a few lines; None when the summary has no `cache`."""
    cache = summary.cache
    if not cache:
        return None
    rows: list[list[str]] = []
    totals = cache.totals
    spread = cache.per_session
    if totals is not None and spread is not None:
        reported = totals.server_reported
        short = totals.fell_short
        checked = totals.reported_requests
        share = f" ({_pct(short / checked)} %)" if short is not None and checked else ""
        rows += [
            ["block size (tokens)", fmt(cache.block_size)],
            [
                "requests (cached tokens reported)",
                f"{fmt(totals.requests)} ({fmt(totals.reported_requests)})",
            ],
            ["prompt tokens", fmt(totals.prompt_tokens)],
            ["ideal cached tokens % of prompt", _pct(totals.ideal_ratio)],
            [
                "realised cached tokens % of prompt",
                _pct(totals.realised_ratio) if reported else NOT_REPORTED,
            ],
            ["kept % (realised / ideal)", _pct(totals.kept) if reported else NOT_REPORTED],
            ["requests that fell short by a block or more", f"{fmt(short)}{share}"],
            [
                "kept % per session (p10 / p50 / min)",
                " / ".join(_pct(k) for k in (spread.p10, spread.p50, spread.min)),
            ],
            ["eviction cliff in run time", _cliff(cache.cliff)],
            [
                "eviction cliff in context length",
                f"from {fmt(cache.context_cliff_tokens)} prompt tokens"
                if cache.context_cliff_tokens is not None
                else "none",
            ],
            ["keeps an idle conversation's prefix", retention_answer(cache.retention)],
        ]
    rows.append(["warm at the start (an earlier run's cache)", _warm(cache.warm_start)])
    return TextTable("Prefix cache: ideal against realised", None, rows)


def _shown_turns(turns: list[CacheTurn]) -> list[CacheTurn]:
    """All turns, or for a long run the first ones and an even spread to the last."""
    if len(turns) <= MAX_TURN_ROWS:
        return turns
    head = MAX_TURN_ROWS // 2
    rest = np.linspace(head, len(turns) - 1, MAX_TURN_ROWS - head).round().astype(int)
    return turns[:head] + [turns[i] for i in rest]


def cache_turns_table(summary: Summary) -> TextTable | None:
    """Mean ideal and realised cached tokens by turn; None without an ideal."""
    turns = summary.cache.per_turn if summary.cache else []
    if not turns:
        return None
    shown = _shown_turns(turns)
    rows = [
        [
            str(t.turn),
            fmt(t.requests),
            fmt(t.mean_prompt_tokens, 0),
            fmt(t.mean_ideal_tokens, 0),
            fmt(t.mean_realised_tokens, 0),
            _pct(t.kept),
        ]
        for t in shown
    ]
    part = f" ({len(shown)} of {len(turns)} turns)" if len(shown) < len(turns) else ""
    header = ["turn", "requests", "prompt tok", "ideal tok", "realised tok", "kept %"]
    return TextTable(f"Prefix cache per turn{part}", header, rows)


def _idle(b: IdleBin) -> str:
    if b.to_s is None:
        return f"≥ {fmt(b.from_s, 1)}"
    return f"{fmt(b.from_s, 1)} - {fmt(b.to_s, 1)}"


def retention_table(summary: Summary) -> TextTable | None:
    """Kept ratio and TTFT by the idle time before a request; None when no request followed
    an earlier one of its session."""
    retention = summary.cache.retention if summary.cache else None
    if retention is None:
        return None
    rows = [
        [
            _idle(b),
            fmt(b.requests),
            _pct(b.kept),
            _pct(b.realised_ratio),
            fmt(b.ttft_ms.p50),
            fmt(b.ttft_ms.mean),
        ]
        for b in retention.bins
    ]
    header = ["idle s", "requests", "kept %", "cached % of prompt", "TTFT p50 ms", "TTFT mean ms"]
    return TextTable("Prefix cache against idle time", header, rows)


def cache_tables(summary: Summary) -> list[TextTable]:
    """The prefix-cache tables the run has something to show in, in order."""
    tables = (cache_table(summary), cache_turns_table(summary), retention_table(summary))
    return [t for t in tables if t is not None]
