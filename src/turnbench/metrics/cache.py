"""Prefix cache, ideal against realised: how much of each turn's prompt could have been cached,
how much the server said it had cached, when it stopped, and how long it keeps a conversation
that sits idle (formulas in docs/prefix-cache.md).

Why an ideal: a cached-token ratio alone cannot tell a server that evicts from a workload that
shares little. The client records per attempt `ideal_cached_tokens`, what an infinite prefix
cache would hold; against it, every shortfall is the server's. Why a warm-start check: tokens
cached before this run's first reply came from someone else (an earlier run), and would flatter
every figure here.

Why numpy over whole columns and SQL windows: a long run has millions of attempts; each
figure is a few vectorised sums over bins, never a Python object per row. The idle time
before each attempt comes from SQLite's `LAG` (the run's index is built only at its end).
"""

from __future__ import annotations

import sqlite3

import numpy as np

from turnbench.metrics.cache_model import (
    Bound,
    Cache,
    CacheTotals,
    CacheTurn,
    Cliff,
    ContextBin,
    IdleBin,
    OverTime,
    Retention,
    SessionKept,
    TimeBin,
    WarmStart,
)
from turnbench.metrics.columns import read_matrix
from turnbench.metrics.stats import describe

S = 1e9  # nanoseconds per second
MS = 1e6  # nanoseconds per millisecond
KEPT_THRESHOLD = 0.9
"""A bin whose Σ realised / Σ ideal falls below this lost the prefix cache (the cliff)."""
MIN_BIN_REQUESTS = 5
"""A bin counts only with this many requests that count (ideal > 0, cached tokens reported)."""
TIME_BINS = 30
MIN_TIME_BIN_S = 1.0
"""Time bins are max(1 s, the span of the sends / 30) wide."""
IDLE_EDGES_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Edges of the idle-time bins: < 0.5 s, 0.5-1 s, ..., 60-120 s, ≥ 120 s."""

_MAIN_OK = "stage != 'warmup' AND status = 'ok'"
# ok main-stage attempts with an ideal, and the idle time before each: its send minus the end
# of the session's previous attempt (by send time, any stage and status); NULL for the first.
# The filter is computed inside as one flag: the window's sorter then carries no text column.
_ROWS = f"""
SELECT t_sent_ns, t_first_token_ns, prompt_tokens, ideal_cached_tokens, cached_tokens,
       turn_index, idle_ns
FROM (
    SELECT t_sent_ns, t_first_token_ns, prompt_tokens, ideal_cached_tokens, cached_tokens,
           turn_index,
           {_MAIN_OK} AND ideal_cached_tokens IS NOT NULL AND prompt_tokens IS NOT NULL AS counts,
           t_sent_ns - LAG(t_end_ns) OVER (PARTITION BY session_id ORDER BY t_sent_ns, attempt)
               AS idle_ns
    FROM requests WHERE t_sent_ns > 0
)
WHERE counts
"""
_SESSIONS = f"""
SELECT SUM(cached_tokens), SUM(ideal_cached_tokens) FROM requests
WHERE {_MAIN_OK} AND prompt_tokens IS NOT NULL AND cached_tokens IS NOT NULL
      AND ideal_cached_tokens > 0
GROUP BY session_id
"""
_LIVE = """
SELECT COUNT(*) FROM sessions
WHERE t_start_ns <= ? AND (t_end_ns IS NULL OR t_end_ns = 0 OR t_end_ns > ?)
"""


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


class _Rows:
    """The attempts' columns, and which of them count for `kept` (ideal > 0, cached reported)."""

    def __init__(self, matrix: np.ndarray, block_size: int) -> None:
        self.sent, self.first, self.prompt, self.ideal, cached, self.turn, self.idle = matrix.T
        self.reported = ~np.isnan(cached)
        self.realised = np.where(self.reported, cached, 0.0)
        self.counts = self.reported & (self.ideal > 0)
        self.short = self.reported & (self.ideal - self.realised >= block_size)

    def kept_by(self, group: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Per group 0..size-1 (`group` -1 leaves a row out): requests that count, and
        Σ realised / Σ ideal over them (NaN without any)."""
        use = self.counts & (group >= 0)
        g = group[use]
        n = np.bincount(g, minlength=size)
        real = np.bincount(g, self.realised[use], minlength=size)
        ideal = np.bincount(g, self.ideal[use], minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            return n, np.where(ideal > 0, real / ideal, np.nan)

    def kept(self, mask: np.ndarray) -> float | None:
        """Σ realised / Σ ideal over the rows of `mask` that count."""
        use = mask & self.counts
        return _ratio(self.realised[use].sum(), self.ideal[use].sum())


def _opt(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _first_below(n: np.ndarray, kept: np.ndarray) -> int | None:
    """The first bin with enough requests whose kept ratio is below the threshold."""
    below = np.flatnonzero((n >= MIN_BIN_REQUESTS) & (kept < KEPT_THRESHOLD))
    return int(below[0]) if below.size else None


def _totals(r: _Rows) -> CacheTotals:
    reported = bool(r.reported.any())
    prompt = r.prompt.sum()
    return CacheTotals(
        requests=len(r.sent),
        server_reported=reported,
        reported_requests=int(r.reported.sum()),
        prompt_tokens=int(prompt),
        ideal_tokens=int(r.ideal.sum()),
        realised_tokens=int(r.realised.sum()) if reported else None,
        ideal_ratio=_ratio(r.ideal.sum(), prompt),
        realised_ratio=_ratio(r.realised.sum(), r.prompt[r.reported].sum()),
        kept=r.kept(r.reported),
        fell_short=int(r.short.sum()) if reported else None,
    )


def _per_turn(r: _Rows) -> list[CacheTurn]:
    turns, group = np.unique(r.turn, return_inverse=True)
    size = len(turns)
    n = np.bincount(group, minlength=size)
    reported = np.bincount(group, r.reported, minlength=size)
    prompt = np.bincount(group, r.prompt, minlength=size) / n
    ideal = np.bincount(group, r.ideal, minlength=size) / n
    real = np.bincount(group, r.realised, minlength=size)
    _, kept = r.kept_by(group, size)
    return [
        CacheTurn(
            turn=int(turns[i]),
            requests=int(n[i]),
            mean_prompt_tokens=float(prompt[i]),
            mean_ideal_tokens=float(ideal[i]),
            mean_realised_tokens=float(real[i] / reported[i]) if reported[i] else None,
            kept=_opt(kept[i]),
        )
        for i in range(size)
    ]


def _per_session(conn: sqlite3.Connection) -> SessionKept:
    """The spread of Σ realised / Σ ideal over sessions with something to keep."""
    sums = read_matrix(conn, _SESSIONS, 2)
    kept = sums[:, 0] / sums[:, 1]
    if not kept.size:
        return SessionKept(sessions=0, p10=None, p50=None, min=None)
    p10, p50 = np.percentile(kept, (10, 50))
    return SessionKept(
        sessions=int(kept.size), p10=float(p10), p50=float(p50), min=float(kept.min())
    )


def _over_time(r: _Rows) -> tuple[OverTime, float | None]:
    """Bins of send time from the first send, and the start of the cliff's bin (ns); None
    without one."""
    t0 = r.sent.min()
    width = max(MIN_TIME_BIN_S * S, (r.sent.max() - t0) / TIME_BINS)
    group = ((r.sent - t0) // width).astype(np.int64)
    n, kept = r.kept_by(group, int(group.max()) + 1)
    bins = [
        TimeBin(start_s=float(t0 + k * width) / S, requests=int(n[k]), kept=_opt(kept[k]))
        for k in np.flatnonzero(n)
    ]
    cliff = _first_below(n, kept)
    start = t0 + cliff * width if cliff is not None else None
    return OverTime(bin_s=float(width) / S, bins=bins), start


def _cliff(conn: sqlite3.Connection, r: _Rows, start_ns: float) -> Cliff:
    before = r.sent < start_ns
    (live,) = conn.execute(_LIVE, (int(start_ns), int(start_ns))).fetchone()
    return Cliff(
        time_s=float(start_ns) / S,
        kept_before=r.kept(before),
        kept_after=r.kept(~before),
        live_sessions=int(live),
    )


def _by_context(r: _Rows) -> tuple[list[ContextBin], int | None]:
    """Bins of prompt length [2^k, 2^(k+1)), and the smallest length of the cliff; None
    without one."""
    exponent = np.floor(np.log2(np.maximum(r.prompt, 1))).astype(np.int64)
    n, kept = r.kept_by(exponent, int(exponent.max()) + 1)
    bins = [
        ContextBin(from_tokens=2 ** int(k), requests=int(n[k]), kept=_opt(kept[k]))
        for k in np.flatnonzero(n)
    ]
    cliff = _first_below(n, kept)
    return bins, 2**cliff if cliff is not None else None


def _retention(r: _Rows) -> Retention | None:
    """Kept ratio and TTFT by idle time before the attempt, and how long the server keeps a
    conversation's prefix; None when no attempt followed an earlier one of its session."""
    has = ~np.isnan(r.idle)
    if not has.any():
        return None
    idle_s = np.where(has, np.maximum(r.idle, 0) / S, np.nan)
    group = np.where(has, np.searchsorted(IDLE_EDGES_S, np.nan_to_num(idle_s), "right"), -1)
    size = len(IDLE_EDGES_S) + 1
    counted, kept = r.kept_by(group, size)
    lower, upper = (0.0, *IDLE_EDGES_S), (*IDLE_EDGES_S, None)
    bins = []
    for k in range(size):
        rows = group == k
        if not rows.any():
            continue
        reported = rows & r.reported
        bins.append(
            IdleBin(
                from_s=lower[k],
                to_s=upper[k],
                requests=int(rows.sum()),
                kept=_opt(kept[k]),
                realised_ratio=_ratio(r.realised[reported].sum(), r.prompt[reported].sum()),
                ttft_ms=describe((r.first[rows] - r.sent[rows]) / MS),
            )
        )
    through, bound = _kept_through(r, group, counted, kept, idle_s)
    return Retention(
        bins=bins,
        kept_through_s=through,
        bound=bound,
        longest_idle_s=float(np.nanmax(idle_s)),
    )


def _kept_through(
    r: _Rows, group: np.ndarray, counted: np.ndarray, kept: np.ndarray, idle_s: np.ndarray
) -> tuple[float | None, Bound | None]:
    """How long an idle conversation keeps its prefix, and how sure: `about` (the upper edge
    of the bin before the first that lost it), `under` (even the shortest bin lost it: its
    upper edge), `at_least` (none lost it: the longest idle seen in a bin that counts)."""
    if not r.reported.any():
        return None, None
    first = _first_below(counted, kept)
    if first == 0:
        return IDLE_EDGES_S[0], "under"
    if first is not None:
        return IDLE_EDGES_S[first - 1], "about"
    qualifying = np.flatnonzero(counted >= MIN_BIN_REQUESTS)
    if not qualifying.size:
        return None, None
    seen = np.isin(group, qualifying) & r.counts
    return float(idle_s[seen].max()), "at_least"


def warm_start(conn: sqlite3.Connection, salted: bool) -> WarmStart:
    """Whether the server's cache held something before this run could have put it there.

    Requests sent before the run's first token arrived (any attempt, any stage) cannot be
    helped by any request of this run that the client saw computed; cached tokens on them
    were left by someone else, or by a request of this run sent with them that shares their
    prefix and was computed first (queued behind it). `requests` counts those that report
    cached tokens.

    Why not checked for a salted run (`cache.salt`, the default): every conversation starts
    with a word drawn for this run, so nothing left by another run can match; cached tokens
    at the start can only be this run's own.
    """
    if salted:
        return WarmStart(
            checked=False,
            first_token_s=None,
            requests=0,
            with_cached=0,
            cached_tokens=0,
            warm=False,
        )
    (first,) = conn.execute("SELECT MIN(t_first_token_ns) FROM requests").fetchone()
    n, with_cached, tokens = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(cached_tokens > 0), 0), COALESCE(SUM(cached_tokens), 0) "
        "FROM requests WHERE t_sent_ns > 0 AND cached_tokens IS NOT NULL AND t_sent_ns < ?",
        (first if first is not None else 2**63 - 1,),
    ).fetchone()
    return WarmStart(
        checked=True,
        first_token_s=first / S if first is not None else None,
        requests=int(n),
        with_cached=int(with_cached),
        cached_tokens=int(tokens),
        warm=bool(with_cached),
    )


def warm_start_note(cache: Cache | None) -> str | None:
    """The verdict's line when the cache was warm at the start; None otherwise."""
    if cache is None or not cache.warm_start.warm:
        return None
    warm = cache.warm_start
    return (
        f"the server's prefix cache was warm at the start: {warm.with_cached} of the "
        f"{warm.requests} requests sent before the first reply found "
        f"{warm.cached_tokens:,} cached tokens no reply of this run could have left: an "
        "earlier run's prefixes (or requests of this run sent together that share one); "
        "cache.salt (on unless --no-cache-salt) keeps runs apart"
    )


def _has_ideal_column(conn: sqlite3.Connection) -> bool:
    """Whether `requests` has the column (an events.db from before it has not)."""
    return any(
        row[1] == "ideal_cached_tokens" for row in conn.execute("PRAGMA table_info(requests)")
    )


def describe_cache(conn: sqlite3.Connection, block_size: int, salted: bool) -> Cache | None:
    """The prefix cache, ideal against realised, as summary.json shows it (keys in
    docs/metrics.md). None when no ok main-stage attempt has an ideal and the cache was not
    warm at the start; with a warm start but no ideal, only `warm_start` is filled in.
    `salted`: the run's conversations carried its salt (no warm-start check then)."""
    warm = warm_start(conn, salted)
    matrix = read_matrix(conn, _ROWS, 7) if _has_ideal_column(conn) else np.empty((0, 7))
    if not len(matrix):
        if not warm.warm:
            return None
        return Cache(block_size=block_size, warm_start=warm)
    r = _Rows(matrix, block_size)
    over_time, cliff = _over_time(r)
    by_context, context_cliff = _by_context(r)
    return Cache(
        block_size=block_size,
        totals=_totals(r),
        per_turn=_per_turn(r),
        per_session=_per_session(conn),
        over_time=over_time,
        by_context=by_context,
        cliff=_cliff(conn, r, cliff) if cliff is not None else None,
        context_cliff_tokens=context_cliff,
        retention=_retention(r),
        warm_start=warm,
    )
