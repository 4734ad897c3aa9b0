"""The prefix cache's section of the summary (`cache`), typed: ideal against realised.

Why its own module: `metrics/cache.py` builds these from events.db and the report reads
them; the keys are those of docs/prefix-cache.md, so summary.json's `cache` is unchanged.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from turnbench.metrics.model_base import Dist, Model

Bound = Literal["about", "under", "at_least"]
"""How sure `Retention.kept_through_s` is (docs/prefix-cache.md, retention)."""


class CacheTotals(Model):
    """The run's attempts with an ideal: prompt, ideal and realised cached tokens."""

    requests: int
    server_reported: bool
    reported_requests: int
    prompt_tokens: int
    ideal_tokens: int
    realised_tokens: int | None
    """None when no attempt reported cached tokens."""
    ideal_ratio: float | None
    realised_ratio: float | None
    kept: float | None
    """Σ realised / Σ ideal over the requests that count."""
    fell_short: int | None
    """Requests short of the ideal by a block or more; None when none reported cached tokens."""


class CacheTurn(Model):
    """One turn index: mean prompt, ideal and realised cached tokens, and kept."""

    turn: int
    requests: int
    mean_prompt_tokens: float
    mean_ideal_tokens: float
    mean_realised_tokens: float | None
    kept: float | None


class SessionKept(Model):
    """The spread of each session's kept ratio over sessions with a request that counts."""

    sessions: int
    p10: float | None
    p50: float | None
    min: float | None


class TimeBin(Model):
    """A bin of send time with a request that counts."""

    start_s: float
    requests: int
    kept: float | None


class OverTime(Model):
    """Kept by send time, in bins `bin_s` wide from the first send."""

    bin_s: float
    bins: list[TimeBin]


class ContextBin(Model):
    """A bin of prompt length [from_tokens, 2 × from_tokens) with a request that counts."""

    from_tokens: int
    requests: int
    kept: float | None


class Cliff(Model):
    """The eviction cliff in run time: when kept first fell below the threshold."""

    time_s: float
    kept_before: float | None
    kept_after: float | None
    live_sessions: int
    """Sessions live at `time_s`: what the server's cache was holding then."""


class IdleBin(Model):
    """A bin of idle time before an attempt [from_s, to_s); `to_s` None for the last."""

    from_s: float
    to_s: float | None
    requests: int
    kept: float | None
    realised_ratio: float | None
    ttft_ms: Dist


class Retention(Model):
    """Kept and TTFT against idle time, and how long an idle conversation's prefix is kept."""

    bins: list[IdleBin]
    kept_through_s: float | None
    bound: Bound | None
    longest_idle_s: float


class WarmStart(Model):
    """The contamination guard: cached tokens on requests sent before the run's first token."""

    checked: bool
    """False for a salted run: nothing another run left can match its conversations."""
    first_token_s: float | None
    requests: int
    with_cached: int
    cached_tokens: int
    warm: bool


class Cache(Model, kw_only=True):
    """The prefix cache, ideal against realised; only `block_size` and `warm_start` filled
    in (the rest left at their None or empty defaults) for a warm start without an ideal."""

    block_size: int
    totals: CacheTotals | None = None
    per_turn: list[CacheTurn] = msgspec.field(default_factory=list)
    per_session: SessionKept | None = None
    over_time: OverTime | None = None
    by_context: list[ContextBin] = msgspec.field(default_factory=list)
    cliff: Cliff | None = None
    context_cliff_tokens: int | None = None
    retention: Retention | None = None
    warm_start: WarmStart
