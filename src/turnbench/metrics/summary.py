"""Every number of a run, computed from `events.db` alone (formulas in docs/metrics.md).

Why from the file: any old run can be re-reported, and the report can never see something the
record does not hold. Failed and cancelled attempts never enter a latency or a throughput; they
are counted apart. Warm-up rows are left out of everything but the counts. Attempts that failed
during an outage (`outages.py`) do not start the measured window or enter the verdict either:
they measure the outage, which has figures of its own.

Why numpy columns read in batches: a long run has millions of rows and tens of millions of
chunk gaps; as Python objects they would need gigabytes, as float64 columns 8 bytes a value.
Percentiles stay exact, from full data.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from turnbench.metrics.affinity import describe_affinity
from turnbench.metrics.agents import agents_of
from turnbench.metrics.cache import describe_cache, warm_start_note
from turnbench.metrics.columns import BATCH, read_matrix
from turnbench.metrics.goodput import describe_slo
from turnbench.metrics.model import (
    Conversations,
    Requests,
    Run,
    Summary,
    Throughput,
    Timeline,
    TurnRow,
    Verdict,
)
from turnbench.metrics.model_base import Dist
from turnbench.metrics.outages import describe_outages, during, read_windows
from turnbench.metrics.server import describe_server
from turnbench.metrics.stages import describe_stages, frontier_of
from turnbench.metrics.stats import describe
from turnbench.record.journal import open_readonly

MS = 1e6  # nanoseconds per millisecond
S = 1e9  # nanoseconds per second
CLIENT_BOUND_LAG_MS = 10.0
"""p99 schedule lag above this (without a cap holding work back) means the client fell behind."""
APPROXIMATE_LENGTHS = "token lengths are approximate (no tokenizer.json, no /tokenize)"
"""The note of a run whose texts were sized without the server's tokenizer."""

MAIN = "stage != 'warmup'"
OK_COLUMNS = (
    "t_intended_ns",
    "t_sent_ns",
    "t_first_token_ns",
    "t_end_ns",
    "gate_wait_ns",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "turn_index",
)


def _chunk_gaps(conn: sqlite3.Connection) -> np.ndarray:
    """Every chunk gap of the successful main-stage attempts, in nanoseconds."""
    cursor = conn.execute(
        f"SELECT chunk_gaps FROM requests WHERE {MAIN} AND status = 'ok' AND length(chunk_gaps) > 0"
    )
    parts: list[np.ndarray] = []
    while rows := cursor.fetchmany(BATCH // 10):
        parts.extend(np.frombuffer(blob, dtype="<i8") for (blob,) in rows)
    return np.concatenate(parts).astype(np.float64) if parts else np.empty(0)


def _request_metrics(ok: np.ndarray, gaps: np.ndarray) -> dict[str, Dist]:
    intended, sent, first, end, gate, prompt, out, cached, _turn = ok.T
    e2e = (end - sent) / MS
    ttft = (first - sent) / MS
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
        ntpot = np.where(out > 0, e2e / out, np.nan)
    return {
        "ttft_ms": describe(ttft),
        "ttft_from_intended_ms": describe((first - intended) / MS),
        "e2e_ms": describe(e2e),
        "e2e_from_intended_ms": describe((end - intended) / MS),
        "tpot_ms": describe(tpot),
        "ntpot_ms": describe(ntpot),
        "itl_ms": describe(gaps / MS),
        "schedule_lag_ms": describe((sent - intended) / MS),
        "gate_wait_ms": describe(gate / MS),
        "prompt_tokens": describe(prompt),
        "completion_tokens": describe(np.nan_to_num(out)),
        "cached_tokens": describe(cached),
    }


def _keyed(rows: list[Any]) -> dict[str, int]:
    """Counts by a column that may be NULL, keyed as JSON writes a NULL key: `null`."""
    return {"null" if key is None else str(key): count for key, count in rows}


def _nan_mean(values: np.ndarray) -> float | None:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else None


def _per_turn(ok: np.ndarray, failures: dict[int, int]) -> list[TurnRow]:
    turns = ok[:, 8]
    out = []
    for turn in sorted(set(np.unique(turns).astype(int).tolist()) | set(failures)):
        rows = ok[turns == turn]
        _i, sent, first, end, _g, prompt, _o, cached, _t = rows.T
        has_prompt = ~np.isnan(prompt)
        has_cached = ~np.isnan(cached)
        prompt_sum = prompt[has_prompt].sum()
        out.append(
            TurnRow(
                turn=turn,
                ok=len(rows),
                failed=failures.get(turn, 0),
                ttft_ms=describe((first - sent) / MS),
                e2e_ms=describe((end - sent) / MS),
                mean_prompt_tokens=_nan_mean(prompt),
                mean_cached_tokens=_nan_mean(cached),
                cached_ratio=float(cached[has_cached].sum() / prompt_sum)
                if has_cached.any() and prompt_sum
                else None,
            )
        )
    return out


def _per_conversation(sessions: list[sqlite3.Row]) -> Conversations:
    outcomes = Counter(s["outcome"] for s in sessions)
    durations = [(s["t_end_ns"] - s["t_start_ns"]) / 1e9 for s in sessions]
    planned = sum(s["turns_planned"] for s in sessions)
    ok = sum(s["turns_ok"] for s in sessions)
    return Conversations(
        sessions=len(sessions),
        outcomes=dict(sorted(outcomes.items())),
        duration_s=describe(durations),
        turns_completed=describe([s["turns_ok"] for s in sessions]),
        turns_failed=sum(s["turns_failed"] for s in sessions),
        turn_success_rate=ok / planned if planned else None,
        sessions_fully_ok=sum(
            1 for s in sessions if s["outcome"] == "completed" and s["turns_failed"] == 0
        ),
        dropped_messages=sum(s["dropped_messages"] for s in sessions),
        session_gate_wait_ms=describe([s["gate_wait_ns"] / MS for s in sessions]),
    )


def _verdict(lag_ms: np.ndarray, gate_ms: np.ndarray, ok: int, sent: int) -> Verdict:
    """Whether the client or a cap held work back, so latencies from the send understate.

    Judged on every attempt that went out, failed and cancelled ones too: an overloaded client
    may complete nothing at all, and that is exactly when the warning matters. Only attempts
    that failed during an outage are left out (the caller's `lag_ms`, `gate_ms`): they were
    sent as the outage backoff allowed, not as the schedule asked. `sent`: all attempts sent.
    """
    lag_p99 = float(np.percentile(lag_ms, 99)) if lag_ms.size else 0.0
    gate_p99 = float(np.percentile(gate_ms, 99)) if gate_ms.size else 0.0
    notes = []
    capacity_bound = gate_p99 > CLIENT_BOUND_LAG_MS
    client_bound = (lag_p99 - gate_p99) > CLIENT_BOUND_LAG_MS
    if client_bound:
        notes.append(
            f"client-bound: requests went out {lag_p99:.1f} ms late at p99 (threshold "
            f"{CLIENT_BOUND_LAG_MS} ms); trust the *_from_intended latencies, "
            "not those from the send"
        )
    if capacity_bound:
        notes.append(
            f"capacity-bound: a cap held requests back {gate_p99:.1f} ms at p99; "
            "the offered load was not sent as scheduled"
        )
    if sent and not ok:
        notes.append(f"no request succeeded: all {sent} attempts failed or were cancelled")
    return Verdict(
        client_bound=client_bound,
        capacity_bound=capacity_bound,
        schedule_lag_p99_ms=lag_p99,
        gate_wait_p99_ms=gate_p99,
        notes=notes,
        threshold_ms=CLIENT_BOUND_LAG_MS,
    )


def _seconds(t_ns: float | None) -> float | None:
    return float(t_ns) / S if t_ns is not None else None


def _timeline(
    run: dict[str, Any],
    load: dict[str, Any],
    last_start_ns: int | None,
    last_end_ns: int | None,
    window_ns: tuple[float, float] | None,
) -> Timeline:
    """Warm-up, arrivals, drain and the measured window, in seconds on the run's clock.

    Why apart: the window runs from the end of the warm-up through the drain, so a run told
    to last 30 s measures over more (or less) than 30 s; these say where the difference is.
    """
    if run.get("end_reason") == "duration" and load.get("duration_s") is not None:
        arrivals_s, arrivals_end = float(load["duration_s"]), "duration"
    elif last_start_ns is not None:
        arrivals_s, arrivals_end = last_start_ns / S, "last_session_start"
    else:
        arrivals_s, arrivals_end = None, None
    last_end_s = _seconds(last_end_ns)
    drain_s = (
        max(0.0, last_end_s - arrivals_s)
        if last_end_s is not None and arrivals_s is not None
        else None
    )
    return Timeline(
        warmup_s=float(load.get("warmup_s") or 0.0),
        arrivals_s=arrivals_s,
        arrivals_end=arrivals_end,
        drain_s=drain_s,
        last_end_s=last_end_s,
        window_start_s=_seconds(window_ns[0]) if window_ns else None,
        window_end_s=_seconds(window_ns[1]) if window_ns else None,
    )


def _notices(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The run's notices in time order; none from an events.db older than its table."""
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'notices'"
    ).fetchone()
    if has_table is None:
        return []
    rows = conn.execute(
        "SELECT kind, message, t_ns, data_json FROM notices ORDER BY t_ns, rowid"
    ).fetchall()
    return [
        {"kind": kind, "message": message, "t_s": t_ns / S, **json.loads(data or "{}")}
        for kind, message, t_ns, data in rows
    ]


def summarize(db_path: Path) -> Summary:
    """The run's summary (the content of summary.json) from its events.db."""
    conn = open_readonly(db_path)
    try:
        conn.row_factory = sqlite3.Row
        runs = conn.execute("SELECT * FROM runs").fetchall()
        run = dict(runs[0]) if runs else {}
        config = json.loads(run.pop("config_json", None) or "{}")
        load = config.get("load") or {}
        sessions = conn.execute(f"SELECT * FROM sessions WHERE {MAIN}").fetchall()
        conn.row_factory = None
        counts = dict(
            conn.execute(
                f"SELECT CASE WHEN {MAIN} THEN status ELSE 'warmup' END, COUNT(*) "
                "FROM requests GROUP BY 1"
            ).fetchall()
        )
        errors = _keyed(
            conn.execute(
                f"SELECT error_kind, COUNT(*) FROM requests WHERE {MAIN} AND status != 'ok' "
                "GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        failures = dict(
            conn.execute(
                f"SELECT turn_index, COUNT(*) FROM requests WHERE {MAIN} AND status = 'error' "
                "GROUP BY 1"
            ).fetchall()
        )
        sources = _keyed(
            conn.execute(
                f"SELECT token_source, COUNT(*) FROM requests WHERE {MAIN} AND status = 'ok' "
                "GROUP BY 1"
            ).fetchall()
        )
        (last_start,) = conn.execute("SELECT MAX(t_start_ns) FROM sessions").fetchone()
        (last_end,) = conn.execute("SELECT MAX(t_end_ns) FROM requests").fetchone()
        ok = read_matrix(
            conn,
            f"SELECT {', '.join(OK_COLUMNS)} FROM requests WHERE {MAIN} AND status = 'ok'",
            len(OK_COLUMNS),
        )
        sent = read_matrix(
            conn,
            f"SELECT t_sent_ns - t_intended_ns, gate_wait_ns, t_sent_ns, status = 'error' "
            f"FROM requests WHERE {MAIN} AND t_sent_ns > 0",
            4,
        )
        gaps = _chunk_gaps(conn)
        notices = _notices(conn)
        windows = read_windows(conn)
        outages = describe_outages(
            conn, windows, (ok[:, 1], ok[:, 3]), float(load.get("warmup_s") or 0.0)
        )
        affinity = describe_affinity(conn)
        stages = describe_stages(conn, config)
        server = describe_server(conn)
        cache = describe_cache(
            conn,
            int((config.get("cache") or {}).get("block_size") or 16),
            salted=bool((config.get("resolved") or {}).get("cache_salt")),
        )
    finally:
        conn.close()
    measured = sent[~((sent[:, 3] == 1) & during(sent[:, 2], windows))]
    n_ok = len(ok)
    window_ns = (float(measured[:, 2].min()), float(ok[:, 3].max())) if n_ok else None
    window_s = (window_ns[1] - window_ns[0]) / S if window_ns else 0.0
    out_tokens = float(np.nansum(ok[:, 6]))
    in_tokens = float(np.nansum(ok[:, 5]))
    cached = float(np.nansum(ok[:, 7]))
    length_source = (config.get("resolved") or {}).get("length_source")
    verdict = _verdict(measured[:, 0] / MS, measured[:, 1] / MS, n_ok, len(sent))
    if length_source == "approximate":
        verdict.notes.append(APPROXIMATE_LENGTHS)
    if warm := warm_start_note(cache):
        verdict.notes.append(warm)
    warmup = counts.pop("warmup", 0)
    requests = Requests(
        attempts=sum(counts.values()) + warmup,
        warmup=warmup,
        ok=counts.get("ok", 0),
        failed=counts.get("error", 0),
        cancelled=counts.get("cancelled", 0),
        token_sources=sources,
        window_s=window_s,
        throughput=Throughput(
            requests_per_s=n_ok / window_s if window_s else None,
            output_tokens_per_s=out_tokens / window_s if window_s else None,
            total_tokens_per_s=(out_tokens + in_tokens) / window_s if window_s else None,
        ),
        cached_token_ratio=cached / in_tokens if in_tokens else None,
        **_request_metrics(ok, gaps),
    )
    return Summary(
        run=Run(**run),
        config=config,
        length_source=length_source,
        requests=requests,
        timeline=_timeline(run, load, last_start, last_end, window_ns),
        per_turn=_per_turn(ok, failures),
        per_conversation=_per_conversation(sessions),
        errors=errors,
        verdict=verdict,
        notices=notices,
        outages=outages,
        downtime_s=float(sum(o.duration_s for o in outages)),
        affinity=affinity,
        server=server,
        slo=describe_slo(db_path, config.get("slo"), window_s),
        agents=agents_of(db_path, window_s),
        cache=cache,
        stages=stages,
        frontier=frontier_of(stages),
    )
