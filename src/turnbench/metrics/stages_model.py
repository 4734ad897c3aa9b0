"""The stages and frontier sections of the summary (`stages`, `frontier`), typed; the points
of a sweep played as runs (sweep.json's `points`) are the same type.

Why one type for a stage and a sweep's point: both are measured by one rule
(`metrics/stages.py`), and the plots, the tables and the Pareto frontier read either; the
few fields only one of them has are left out of the JSON when unset, so summary.json's
`stages` and sweep.json's `points` keep the keys of docs/load-modes.md, in the same order.
"""

from __future__ import annotations

from turnbench.metrics.model_base import Dist, Model
from turnbench.metrics.slo_model import TierResult


class StageRequests(Model):
    """Every attempt of the stage by status (not only those of its window)."""

    ok: int
    failed: int
    cancelled: int


class Window(Model):
    """The steady-state window the figures are over: run seconds, its length `s`, the
    successful requests that ended in it, and the rule in words."""

    start_s: float
    end_s: float
    s: float
    requests: int
    rule: str


class TurnFigures(Model):
    """One turn index's throughput and latency over the window (the stage's `by_turn`)."""

    turn: int
    requests_per_s: float | None
    output_tokens_per_s: float | None
    output_tokens_per_s_per_user: float | None
    """The median of each request's decode speed, tokens/s."""
    ttft_ms: Dist
    tpot_ms: Dist
    e2e_ms: Dist


class Stage(Model, kw_only=True, omit_defaults=True):
    """A stage of a staged run (with `start_s`, `end_s`, `at_end`), or a point of a sweep
    played as runs (with `folder`, `end_reason`): its load, its counts, and its figures over
    its steady-state window."""

    name: str
    folder: str | None = None
    """A sweep point's run folder, inside the sweep's."""
    mode: str
    level: float | None
    """Users, or sessions/s; None for a mode with no level (parallel)."""
    start_s: float | None = None
    end_s: float | None = None
    at_end: str | None = None
    """`continue` or `cut`: what the stage's end does to the sessions still playing."""
    end_reason: str | None = None
    """Why a sweep point's run ended (`crashed` when it wrote none)."""
    requests: StageRequests
    window: Window
    requests_per_s: float | None
    output_tokens_per_s: float | None
    output_tokens_per_s_per_user: float | None
    ttft_ms: Dist
    tpot_ms: Dist
    e2e_ms: Dist
    by_turn: list[TurnFigures]
    conversations_per_h: float | None
    """Conversations of any stage completed in the window, per hour of it."""
    conversations_per_h_per_user: float | None
    """3600 / their median length; None with none."""
    goodput: dict[str, TierResult] | None
    """Every SLO tier judged on the stage alone; None without SLOs."""


class FrontierPoint(Model):
    """A stage (or sweep point) on the Pareto frontier of tokens/s per user against in total."""

    name: str
    mode: str
    level: float | None
    output_tokens_per_s: float
    output_tokens_per_s_per_user: float
