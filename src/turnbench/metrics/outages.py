"""The run's outages: when the target could not be reached, and how the run came back.

Why here, from the `outages` table: each worker's circuit breaker records when it went down
and when the target answered again (`engine/outage.py`), but a user asks about the target,
not about workers: overlapping or touching windows of the workers are one outage. Every
figure of an outage is computed from `events.db` alone, like the rest of the summary.
"""

from __future__ import annotations

import math
import sqlite3
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from turnbench.metrics.outages_model import Outage

S_NS = 1_000_000_000
BASELINE_S = 10
"""Whole seconds before an outage whose completions make its throughput baseline."""
RECOVERED = 0.8
"""The share of the baseline a second's completions must reach for the run to have recovered."""
_RANGES_PER_QUERY = 200
"""Windows per query of the attempts sent in them (SQLite limits host parameters and an
expression's depth)."""


@dataclass(frozen=True)
class Window:
    """One outage: per worker (one breaker's down to its back or give-up), or merged.

    `end_ns` is None while still down at the run's end; `until_ns` is then the run's end,
    so an open window still has a length and holds the attempts sent before the run ended.
    """

    start_ns: int
    end_ns: int | None
    until_ns: int
    back: bool
    gave_up: bool
    workers: frozenset[int]
    sessions_waiting: int


def read_windows(conn: sqlite3.Connection) -> list[Window]:
    """The run's merged outage windows; none from an events.db older than the table.

    A window still open ends with the run's last row (attempt, session or outage event):
    sessions waiting behind a breaker send nothing, so the last attempt may end long before.
    """
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outages'"
    ).fetchone()
    if has_table is None:
        return []
    events = conn.execute(
        "SELECT worker, kind, t_ns, sessions_waiting FROM outages ORDER BY worker, t_ns, rowid"
    ).fetchall()
    (run_end_ns,) = conn.execute(
        "SELECT MAX(t) FROM (SELECT MAX(t_end_ns) AS t FROM requests UNION ALL "
        "SELECT MAX(t_end_ns) FROM sessions UNION ALL SELECT MAX(t_ns) FROM outages)"
    ).fetchone()
    return merge(worker_windows(events, run_end_ns or 0))


def worker_windows(events: Iterable[tuple[int, str, int, int]], run_end_ns: int) -> list[Window]:
    """Pair each worker's `down` with its next `back` or `gave_up` (events in time order per
    worker); a `down` left unpaired is still down at `run_end_ns`."""
    opened: dict[int, int] = {}
    out = []
    for worker, kind, t_ns, waiting in events:
        if kind == "down":
            opened.setdefault(worker, t_ns)
        elif worker in opened:
            out.append(
                Window(
                    start_ns=opened.pop(worker),
                    end_ns=t_ns,
                    until_ns=t_ns,
                    back=kind == "back",
                    gave_up=kind == "gave_up",
                    workers=frozenset([worker]),
                    sessions_waiting=waiting,
                )
            )
    out += [
        Window(start, None, max(start, run_end_ns), False, False, frozenset([worker]), 0)
        for worker, start in opened.items()
    ]
    return out


def merge(windows: Sequence[Window]) -> list[Window]:
    """Overlapping or touching windows as one, in time order: "the target was down", however
    many workers saw it. Open if any part is; back when the part that ends last came back."""
    out: list[Window] = []
    for w in sorted(windows, key=lambda w: (w.start_ns, w.until_ns)):
        if not out or w.start_ns > out[-1].until_ns:
            out.append(w)
            continue
        cur = out[-1]
        last = w if w.until_ns > cur.until_ns else cur
        still_open = cur.end_ns is None or w.end_ns is None
        out[-1] = Window(
            start_ns=cur.start_ns,
            end_ns=None if still_open else last.end_ns,
            until_ns=last.until_ns,
            back=not still_open and last.back,
            gave_up=cur.gave_up or w.gave_up,
            workers=cur.workers | w.workers,
            sessions_waiting=cur.sessions_waiting + w.sessions_waiting,
        )
    return out


def during(t_ns: np.ndarray, windows: Sequence[Window]) -> np.ndarray:
    """Which times fall within one of the merged (sorted, disjoint) windows, ends included."""
    if not windows:
        return np.zeros(t_ns.shape, dtype=bool)
    starts = np.array([w.start_ns for w in windows], dtype=np.float64)
    untils = np.array([w.until_ns for w in windows], dtype=np.float64)
    i = np.searchsorted(starts, t_ns, side="right") - 1
    return (i >= 0) & (t_ns <= untils[np.maximum(i, 0)])


@dataclass
class _Tally:
    """What was sent during one outage."""

    failed_by_kind: Counter[str] = field(default_factory=Counter)
    turns: set[tuple[str, int]] = field(default_factory=set)


def _tallies(conn: sqlite3.Connection, windows: Sequence[Window]) -> list[_Tally]:
    """The attempts of every stage sent within each window, in one scan per
    `_RANGES_PER_QUERY` windows: only rows inside a window come out of SQLite."""
    tallies = [_Tally() for _ in windows]
    starts = [w.start_ns for w in windows]
    for lo in range(0, len(windows), _RANGES_PER_QUERY):
        part = windows[lo : lo + _RANGES_PER_QUERY]
        where = " OR ".join(["t_sent_ns BETWEEN ? AND ?"] * len(part))
        bounds = [t for w in part for t in (w.start_ns, w.until_ns)]
        rows = conn.execute(
            f"SELECT t_sent_ns, status, error_kind, session_id, turn_index FROM requests "
            f"WHERE {where}",
            bounds,
        )
        for t_sent, status, kind, session, turn in rows:
            tally = tallies[bisect_right(starts, t_sent) - 1]
            tally.turns.add((session, turn))
            if status == "error":
                tally.failed_by_kind[kind] += 1
    return tallies


def _first_success_ns(ok_sent: np.ndarray, ok_end: np.ndarray, after_ns: int) -> float | None:
    """The end of the first successful main-stage request sent at or after `after_ns`."""
    later = ok_sent >= after_ns
    return float(ok_end[later][np.argmin(ok_sent[later])]) if later.any() else None


def completions_per_s(ok_end_ns: np.ndarray) -> np.ndarray:
    """Successful main-stage requests completed in each whole second of the run clock."""
    if not ok_end_ns.size:
        return np.zeros(0, dtype=np.int64)
    return np.bincount((ok_end_ns // S_NS).astype(np.int64))


def baseline(per_s: np.ndarray, start_s: float, warmup_s: float) -> float | None:
    """The median completions per second over the (up to) `BASELINE_S` whole seconds before
    an outage, after the warm-up; None without such a second or with nothing completed."""
    first = max(math.floor(start_s) - BASELINE_S, math.ceil(warmup_s), 0)
    counts = [int(per_s[k]) if k < per_s.size else 0 for k in range(first, math.floor(start_s))]
    value = float(np.median(counts)) if counts else 0.0
    return value if value > 0 else None


def recovery_s(per_s: np.ndarray, first_success_s: float, base: float) -> float | None:
    """From the first success to the start of the first whole second at or after it whose
    completions reach `RECOVERED` of the baseline; None when no such second came."""
    for k in range(math.ceil(first_success_s), per_s.size):
        if per_s[k] >= RECOVERED * base:
            return k - first_success_s
    return None


def describe_outages(
    conn: sqlite3.Connection,
    windows: Sequence[Window],
    ok_sent_end: tuple[np.ndarray, np.ndarray],
    warmup_s: float,
) -> list[Outage]:
    """Each outage as summary.json shows it (keys in docs/metrics.md#outages-outages), from
    the send and end times of the successful main-stage requests and the rows sent in it."""
    ok_sent, ok_end = ok_sent_end
    per_s = completions_per_s(ok_end)
    out = []
    for w, tally in zip(windows, _tallies(conn, windows), strict=True):
        start_s = w.start_ns / S_NS
        first_ns = _first_success_ns(ok_sent, ok_end, w.end_ns) if w.end_ns is not None else None
        first_s = first_ns / S_NS if first_ns is not None else None
        base = baseline(per_s, start_s, warmup_s)
        out.append(
            Outage(
                start_s=start_s,
                end_s=w.end_ns / S_NS if w.end_ns is not None else None,
                duration_s=(w.until_ns - w.start_ns) / S_NS,
                back=w.back,
                gave_up=w.gave_up,
                workers=len(w.workers),
                failed_attempts=sum(tally.failed_by_kind.values()),
                failed_by_kind=dict(sorted(tally.failed_by_kind.items())),
                turns_affected=len(tally.turns),
                sessions_affected=len({session for session, _ in tally.turns}),
                sessions_waiting=w.sessions_waiting,
                first_success_s=first_s,
                baseline_per_s=base,
                recovery_s=recovery_s(per_s, first_s, base)
                if first_s is not None and base is not None
                else None,
            )
        )
    return out
