"""The SLO section of the summary (`slo`), typed: each tier's objectives judged over the run,
and its request, output-token and conversation goodput.

Why its own module: `metrics/goodput.py` builds these from events.db (for the run, and for
each stage's `goodput`), and the console, the HTML report, `compare` and the capacity search
read them; the field names are the keys of docs/metrics.md ("SLOs and goodput"), so
summary.json's `slo` is unchanged.
"""

from __future__ import annotations

from typing import Literal

from turnbench.metrics.model_base import Model
from turnbench.slo import Metric, TurnClass

Unit = Literal["ms", "tokens/s"]
"""The unit of an objective's threshold and measured value (`turnbench.slo.METRICS`)."""


class ObjectiveResult(Model):
    """One objective of a tier judged on the run: its settings, then the run's percentile of
    its metric against the threshold."""

    slo: str
    """The objective as a user writes it, e.g. `ttft p90 <= 500 ms (later turns)`."""
    metric: Metric
    percentile: float
    threshold: float
    turns: TurnClass
    unit: Unit
    bound: Literal["min", "max"]
    """`max` for a time, `min` for a speed (a floor)."""
    measured: float | None
    """None when there is no value to measure (no successful attempt of its turns)."""
    values: int
    """How many values `measured` is over: attempts, or chunk gaps for `itl`."""
    met_ratio: float | None
    """Share of the attempts with a defined value that meet it themselves; None without any."""
    passed: bool | None


class Share(Model):
    """Good work out of the judged work, and good work per second of the window."""

    total: int
    good: int
    ratio: float | None
    per_s: float | None


class ConversationShare(Share):
    """Judged and good conversations, and those the run's end cut (`unfinished`, not judged)."""

    unfinished: int


class ByTurns(Model):
    """A share over every turn, over first turns and over later turns."""

    all: Share
    first: Share
    later: Share


class TierResult(Model):
    """One tier: its verdict, its objectives, and goodput by requests, output tokens and
    conversations."""

    passed: bool | None
    """False when an objective failed, None with none or one not measured, else True."""
    objectives: list[ObjectiveResult]
    conversation_s: float | None
    requests: ByTurns
    output_tokens: ByTurns
    conversations: ConversationShare


class Slo(Model):
    """Every tier of the run's SLOs, rates over the measured window `window_s`."""

    window_s: float
    tiers: dict[str, TierResult]
