"""What the load looked like over the run, for the report's plots: requests in flight and
sessions open, schedule lag, errors by kind, and TTFT against context length; from events.db.

Why here and not in the summary: these are shapes to look at, not numbers to compare between
runs. Why bins and samples: a run of a million requests must still give a report of a few MB
that builds in seconds, so every series is at most `MAX_BINS` points (SQLite or numpy does the
counting) and every scatter at most `MAX_SAMPLES` points.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from turnbench.metrics.columns import read_matrix
from turnbench.metrics.stages import stage_bounds
from turnbench.metrics.summary import MAIN, MS, S
from turnbench.record.journal import open_readonly
from turnbench.report.figures import MAX_BINS

MAX_SAMPLES = 3000


def _bin_width(conn: sqlite3.Connection) -> float:
    """Seconds per bin: a hundredth of the run up to 1 s, wider past MAX_BINS bins; so a
    short test run still has a shape and a day-long one stays small."""
    (last,) = conn.execute("SELECT MAX(t_end_ns) FROM requests").fetchone()
    span = (last or 0) / S
    return float(max(span / MAX_BINS, min(1.0, span / 100), 1e-3))


def _open_at(starts: np.ndarray, ends: np.ndarray, at: np.ndarray) -> np.ndarray:
    """How many [start, end) intervals hold each instant of `at`."""
    return np.searchsorted(np.sort(starts), at, side="right") - np.searchsorted(
        np.sort(ends), at, side="right"
    )


def _sent(conn: sqlite3.Connection) -> np.ndarray:
    """Every attempt that went out: sent, end, intended (ns) and 1 for the warm-up's; one
    pass over the table for the two series below."""
    return read_matrix(
        conn,
        "SELECT t_sent_ns, t_end_ns, t_intended_ns, stage = 'warmup' FROM requests "
        "WHERE t_sent_ns > 0",
        4,
    )


def _users_at(config: dict[str, Any], at: np.ndarray) -> np.ndarray | None:
    """The users configured at each instant (NaN where a stage is not a users stage); None
    for a run with no closed-loop load at all."""
    bounds = stage_bounds(config)
    if bounds is None:
        load = config.get("load") or {}
        users = load.get("users")
        if load.get("mode") != "users" or not isinstance(users, int):
            return None
        return np.full(len(at), float(users))
    out = np.full(len(at), np.nan)
    for _, stage, start, end in bounds:
        if stage.get("mode", "users") == "users":
            out[(at >= start / S) & (at < end / S)] = float(stage.get("users", 4))
    return None if np.isnan(out).all() else out


def _concurrency(
    conn: sqlite3.Connection, req: np.ndarray, width: float, config: dict[str, Any]
) -> dict[str, Any]:
    """Requests in flight, sessions open and (an agent run) agent tasks open at the start of
    each bin, the warm-up's too (they load the server all the same); and the users the config
    (or each stage) holds."""
    ses = read_matrix(conn, "SELECT t_start_ns, t_end_ns FROM sessions", 2)
    if not len(req):
        return {"t": [], "in_flight": [], "sessions": []}
    end = float(req[:, 1].max()) / S
    at = np.arange(0.0, end + width, width)
    out: dict[str, Any] = {
        "t": at,
        "in_flight": _open_at(req[:, 0] / S, req[:, 1] / S, at),
        "sessions": _open_at(ses[:, 0] / S, ses[:, 1] / S, at) if len(ses) else at * 0,
    }
    columns = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
    if (
        "parent_session_id" in columns
        and conn.execute(
            "SELECT 1 FROM sessions WHERE parent_session_id IS NOT NULL LIMIT 1"
        ).fetchone()
    ):
        roots = read_matrix(
            conn, "SELECT t_start_ns, t_end_ns FROM sessions WHERE parent_session_id IS NULL", 2
        )
        out["tasks"] = _open_at(roots[:, 0] / S, roots[:, 1] / S, at)
    users = _users_at(config, at)
    if users is not None:
        out["users"] = users
    return out


def _lag(req: np.ndarray, width: float) -> dict[str, Any]:
    """Schedule lag (sent − intended, ms) by send time, main stage: p50, p99 and max of each
    bin, read off one sort (a plot's percentiles: the lower rank, no interpolation)."""
    rows = req[req[:, 3] == 0]
    if not len(rows):
        return {"t": [], "p50": [], "p99": [], "max": []}
    bins = (rows[:, 0] / S // width).astype(np.int64)
    lag = (rows[:, 0] - rows[:, 2]) / MS
    order = np.lexsort((lag, bins))  # by bin, then by lag within the bin
    bins, lag = bins[order], lag[order]
    starts = np.r_[0, np.flatnonzero(np.diff(bins)) + 1]
    last = np.r_[starts[1:], len(bins)] - 1

    def rank(q: float) -> np.ndarray:  # the value at quantile q of each bin (lower rank)
        return lag[starts + np.floor(q * (last - starts)).astype(np.int64)]

    return {"t": bins[starts] * width, "p50": rank(0.5), "p99": rank(0.99), "max": lag[last]}


def _errors(conn: sqlite3.Connection, width: float) -> dict[str, Any]:
    """Failed and cancelled attempts in each bin (by their end), one series per error kind."""
    rows = conn.execute(
        f"SELECT COALESCE(error_kind, status), CAST(t_end_ns / ? AS INTEGER), COUNT(*) "
        f"FROM requests WHERE {MAIN} AND status != 'ok' GROUP BY 1, 2",
        (width * S,),
    ).fetchall()
    kinds: dict[str, dict[int, int]] = {}
    for kind, b, n in rows:
        kinds.setdefault(str(kind), {})[int(b)] = int(n)
    return {
        kind: {"t": [b * width for b in sorted(c)], "count": [c[b] for b in sorted(c)]}
        for kind, c in sorted(kinds.items())
    }


def _ttft_by_context(conn: sqlite3.Connection) -> dict[str, Any]:
    """TTFT against prompt tokens for at most MAX_SAMPLES successful requests, evenly spread
    over the run (every k-th row id)."""
    where = f"{MAIN} AND status = 'ok' AND t_first_token_ns IS NOT NULL"
    (n,) = conn.execute(f"SELECT COUNT(*) FROM requests WHERE {where}").fetchone()
    step = max(1, -(-n // MAX_SAMPLES))
    rows = read_matrix(
        conn,
        f"SELECT prompt_tokens, t_first_token_ns - t_sent_ns, turn_index FROM requests "
        f"WHERE {where} AND id % {step} = 0",
        3,
    )
    rows = rows[~np.isnan(rows[:, 0])] if len(rows) else rows
    return {
        "prompt_tokens": rows[:, 0] if len(rows) else [],
        "ttft_ms": rows[:, 1] / MS if len(rows) else [],
        "turn": rows[:, 2] if len(rows) else [],
        "of": int(n),
    }


def load_series(db_path: Path) -> dict[str, Any]:
    """Concurrency, schedule lag and errors over time, and TTFT by context (main stage; the
    concurrency counts the warm-up too)."""
    conn = open_readonly(db_path)
    try:
        width = _bin_width(conn)
        sent = _sent(conn)
        (config_json,) = conn.execute("SELECT config_json FROM runs").fetchone() or ("{}",)
        config = json.loads(config_json or "{}")
        return {
            "bin_s": width,
            "concurrency": _concurrency(conn, sent, width, config),
            "lag": _lag(sent, width),
            "errors": _errors(conn, width),
            "ttft_by_context": _ttft_by_context(conn),
        }
    finally:
        conn.close()
