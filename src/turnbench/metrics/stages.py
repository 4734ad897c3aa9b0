"""Figures per stage of a staged run (`stages:`), each over its steady-state window, and the
Pareto frontier of the stages (or of a sweep's points): tokens/s per user against in total.

The steady-state window of a stage leaves out its ramp-up and its drain by one rule: it
starts the first time the requests in flight (of any stage, sampled every 10 ms) reach the
stage's level, the median of that count over the stage, and it ends at the stage's end (its
sessions' requests after it belong to the next stage, or are the run's drain). The figures
are over the stage's successful requests that ended in that window (throughput is what was
delivered in it); the counts are over all its requests. A row belongs to the stage in force
when it was intended (`pacing/stages.py`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np
from pydantic import ValidationError

from turnbench.metrics.columns import read_matrix
from turnbench.metrics.goodput import judge_all
from turnbench.metrics.stages_model import FrontierPoint, Stage, StageRequests, TurnFigures, Window
from turnbench.metrics.stats import describe
from turnbench.slo import SloConfig

MS = 1e6
S = 1e9
SAMPLE_NS = 10_000_000
BY_TURN = (1, 2, 3, 4)
"""The turn indexes whose figures a stage also gives on their own (the first, where the
prompt is cold, and the next few, where a prefix cache pays or not)."""
WINDOW_RULE = (
    "from the first time the requests in flight reach the stage's median in-flight count "
    "to the stage's end; figures over its successful requests that ended in it"
)


def stage_bounds(config: dict[str, Any]) -> list[tuple[str, dict[str, Any], int, int]] | None:
    """(name, stage config, start ns, end ns) of each stage, from the resolved config; None
    for a run with no `stages:`."""
    stages = config.get("stages")
    if not stages:
        return None
    out = []
    start = 0
    for i, stage in enumerate(stages, start=1):
        end = start + int(float(stage["duration_s"]) * S)
        out.append((stage.get("name") or f"stage-{i}", stage, start, end))
        start = end
    return out


def _in_flight(conn: sqlite3.Connection, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample times over [start, end) and the requests in flight at each."""
    spans = read_matrix(
        conn,
        "SELECT t_sent_ns, t_end_ns FROM requests WHERE t_sent_ns > 0 AND t_sent_ns < ? "
        "AND t_end_ns > ?",
        2,
        (end, start),
    )
    times = np.arange(start, end, SAMPLE_NS, dtype=np.float64)
    sent = np.sort(spans[:, 0])
    ended = np.sort(spans[:, 1])
    counts = np.searchsorted(sent, times, "right") - np.searchsorted(ended, times, "right")
    return times, counts


def steady_window(conn: sqlite3.Connection, start: int, end: int) -> tuple[int, int]:
    """The stage's steady-state window (run ns), by the rule of the module's docstring."""
    times, counts = _in_flight(conn, start, end)
    if not counts.size:
        return start, end
    reached = np.flatnonzero(counts >= float(np.median(counts)))
    return (int(times[reached[0]]) if reached.size else start), end


def _figures(ok: np.ndarray, window_s: float) -> dict[str, Any]:
    """The throughput and latency fields of a `Stage` (and of a `TurnFigures`) over the
    window, from the successful attempts' send, first token, end and output tokens."""
    sent, first, end, out = ok.T
    ttft = (first - sent) / MS
    e2e = (end - sent) / MS
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
        speed = np.where((out > 1) & (end > first), (out - 1) / ((end - first) / S), np.nan)
    tokens = float(np.nansum(out))
    return {
        "requests_per_s": len(ok) / window_s if window_s else None,
        "output_tokens_per_s": tokens / window_s if window_s else None,
        "output_tokens_per_s_per_user": describe(speed).p50,
        "ttft_ms": describe(ttft),
        "tpot_ms": describe(tpot),
        "e2e_ms": describe(e2e),
    }


def _conversations(durations_s: np.ndarray, window_s: float) -> dict[str, Any]:
    """Conversations/h in total (those completed in the window, of any stage) and per user:
    3600 / their median length, what one user playing them back to back gets through."""
    median = float(np.median(durations_s)) if durations_s.size else 0.0
    return {
        "conversations_per_h": len(durations_s) * 3600 / window_s if window_s else None,
        "conversations_per_h_per_user": 3600 / median if median > 0 else None,
    }


def _level(stage: dict[str, Any]) -> float | None:
    mode = stage.get("mode", "users")
    if mode == "users":
        return float(stage.get("users", 4))
    if mode == "sequential":
        return 1.0
    if mode == "session-rate":
        return stage.get("rate")
    return None


def _slo_of(config: dict[str, Any]) -> SloConfig | None:
    try:
        return SloConfig.model_validate(config["slo"]) if config.get("slo") else None
    except ValidationError:
        return None


def _span(
    conn: sqlite3.Connection,
    slo: SloConfig | None,
    stage: str | None,
    start: int,
    end: int,
    **head: Any,
) -> Stage:
    """The counts, steady-state window, figures and goodput of the attempts of one stage (or,
    `stage` None, of every attempt after the warm-up) intended in [start, end); `head` the
    fields that say which stage or point it is (name, mode, level...)."""
    where, args = ("stage = ?", (stage,)) if stage is not None else ("stage != 'warmup'", ())
    counts = dict(
        conn.execute(
            f"SELECT status, COUNT(*) FROM requests WHERE {where} GROUP BY 1", args
        ).fetchall()
    )
    w_start, w_end = steady_window(conn, start, end)
    ok = read_matrix(
        conn,
        "SELECT t_sent_ns, t_first_token_ns, t_end_ns, completion_tokens, turn_index "
        f"FROM requests WHERE {where} AND status = 'ok' AND t_end_ns >= ? AND t_end_ns <= ?",
        5,
        (*args, w_start, w_end),
    )
    window_s = (w_end - w_start) / S
    done = read_matrix(
        conn,
        "SELECT t_end_ns - t_start_ns FROM sessions WHERE outcome = 'completed' "
        "AND t_end_ns >= ? AND t_end_ns <= ?",
        1,
        (w_start, w_end),
    )[:, 0]
    return Stage(
        **head,
        requests=StageRequests(
            ok=counts.get("ok", 0),
            failed=counts.get("error", 0),
            cancelled=counts.get("cancelled", 0),
        ),
        window=Window(
            start_s=w_start / S, end_s=w_end / S, s=window_s, requests=len(ok), rule=WINDOW_RULE
        ),
        **_figures(ok[:, :4], window_s),
        by_turn=[TurnFigures(turn=k, **_figures(ok[ok[:, 4] == k, :4], window_s)) for k in BY_TURN],
        **_conversations(done / S, window_s),
        goodput=judge_all(conn, slo, (end - start) / S, stage).tiers if slo else None,
    )


def describe_stages(conn: sqlite3.Connection, config: dict[str, Any]) -> list[Stage]:
    """Each stage's counts, window, figures (tokens, conversations) and goodput; [] for a
    run with no `stages:`.
    Goodput is judged on all the stage's attempts (its rates over the stage's whole length),
    None when the run has no valid SLOs (`describe_slo` names what is wrong with them)."""
    slo = _slo_of(config)
    return [
        _span(
            conn,
            slo,
            name,
            start,
            end,
            name=name,
            mode=stage.get("mode", "users"),
            level=_level(stage),
            start_s=start / S,
            end_s=end / S,
            at_end=stage.get("at_end", "continue"),
        )
        for name, stage, start, end in stage_bounds(config) or []
    ]


def describe_point(
    conn: sqlite3.Connection,
    config: dict[str, Any],
    start_ns: int,
    end_ns: int,
    *,
    name: str,
    folder: str,
    mode: str,
    level: float,
    end_reason: str,
) -> Stage:
    """A whole run's figures as a stage's (one point of a sweep played as runs, named by the
    keywords): its attempts after the warm-up, over the steady-state window of [start_ns,
    end_ns), so the points of a series and the stages of a staged sweep are measured by one
    rule."""
    return _span(
        conn,
        _slo_of(config),
        None,
        start_ns,
        end_ns,
        name=name,
        folder=folder,
        mode=mode,
        level=level,
        end_reason=end_reason,
    )


def pareto(
    points: list[Stage],
    total: str = "output_tokens_per_s",
    per_user: str = "output_tokens_per_s_per_user",
) -> list[Stage]:
    """The points no other beats on both the per-user figure and the total one (the fields
    named `total` and `per_user`: tokens/s, or conversations/h), by the total ascending (the
    frontier of a throughput-interactivity plot)."""

    def figures(p: Stage) -> tuple[float, float]:
        return getattr(p, total), getattr(p, per_user)

    known = [p for p in points if None not in figures(p)]

    def beaten(p: Stage) -> bool:
        x, y = figures(p)
        return any(a >= x and b >= y and (a > x or b > y) for a, b in map(figures, known))

    front = [p for p in known if not beaten(p)]
    return sorted(front, key=lambda p: figures(p)[0])


def frontier_of(points: list[Stage]) -> list[FrontierPoint]:
    """The Pareto frontier as summary.json holds it: each point's name, level and the two
    throughputs (empty with fewer than two points)."""
    points = [p for p in points if p.name != "warmup"]  # left out, as everywhere
    if len(points) < 2:
        return []
    return [
        FrontierPoint(
            name=p.name,
            mode=p.mode,
            level=p.level,
            output_tokens_per_s=total,
            output_tokens_per_s_per_user=per_user,
        )
        for p in pareto(points)
        if (total := p.output_tokens_per_s) is not None
        and (per_user := p.output_tokens_per_s_per_user) is not None  # always: pareto's own
    ]
