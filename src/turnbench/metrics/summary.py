"""Every number of a run, computed from `events.db` alone (formulas in docs/metrics.md).

Why from the file: any old run can be re-reported, and the report can never see something the
record does not hold. Failed and cancelled attempts never enter a latency or a throughput; they
are counted apart. Warm-up rows are left out of everything but the counts.
"""

from __future__ import annotations

import json
import sqlite3
from array import array
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from turnbench.metrics.stats import describe, percentile

MS = 1e6  # nanoseconds per millisecond
CLIENT_BOUND_LAG_MS = 10.0
"""p99 schedule lag above this (without a cap holding work back) means the client fell behind."""


def _rows(conn: sqlite3.Connection, sql: str) -> list[sqlite3.Row]:
    conn.row_factory = sqlite3.Row
    return conn.execute(sql).fetchall()


def _request_metrics(ok: list[sqlite3.Row]) -> dict[str, Any]:
    ttft: list[float] = []
    ttft_i: list[float] = []
    e2e: list[float] = []
    e2e_i: list[float] = []
    tpot: list[float] = []
    ntpot: list[float] = []
    lag: list[float] = []
    gate: list[float] = []
    itl: list[float] = []
    prompt: list[int] = []
    completion: list[int] = []
    cached: list[int] = []
    for r in ok:
        sent, intended, end = r["t_sent_ns"], r["t_intended_ns"], r["t_end_ns"]
        e = (end - sent) / MS
        e2e.append(e)
        e2e_i.append((end - intended) / MS)
        lag.append((sent - intended) / MS)
        gate.append(r["gate_wait_ns"] / MS)
        out = r["completion_tokens"] or 0
        if r["t_first_token_ns"] is not None:
            t = (r["t_first_token_ns"] - sent) / MS
            ttft.append(t)
            ttft_i.append((r["t_first_token_ns"] - intended) / MS)
            if out > 1:
                tpot.append((e - t) / (out - 1))
        if out > 0:
            ntpot.append(e / out)
        if r["chunk_gaps"]:
            gaps = array("q")
            gaps.frombytes(r["chunk_gaps"])
            itl.extend(g / MS for g in gaps)
        if r["prompt_tokens"] is not None:
            prompt.append(r["prompt_tokens"])
        completion.append(out)
        if r["cached_tokens"] is not None:
            cached.append(r["cached_tokens"])
    return {
        "ttft_ms": describe(ttft),
        "ttft_from_intended_ms": describe(ttft_i),
        "e2e_ms": describe(e2e),
        "e2e_from_intended_ms": describe(e2e_i),
        "tpot_ms": describe(tpot),
        "ntpot_ms": describe(ntpot),
        "itl_ms": describe(itl),
        "schedule_lag_ms": describe(lag),
        "gate_wait_ms": describe(gate),
        "prompt_tokens": describe(prompt),
        "completion_tokens": describe(completion),
        "cached_tokens": describe(cached),
    }


def _per_turn(ok: list[sqlite3.Row], failed: list[sqlite3.Row]) -> list[dict[str, Any]]:
    by_turn: dict[int, list[sqlite3.Row]] = defaultdict(list)
    for r in ok:
        by_turn[r["turn_index"]].append(r)
    failures = Counter(r["turn_index"] for r in failed)
    out = []
    for turn in sorted(set(by_turn) | set(failures)):
        rows = by_turn.get(turn, [])
        ttft = [
            (r["t_first_token_ns"] - r["t_sent_ns"]) / MS
            for r in rows
            if r["t_first_token_ns"] is not None
        ]
        e2e = [(r["t_end_ns"] - r["t_sent_ns"]) / MS for r in rows]
        prompt = [r["prompt_tokens"] for r in rows if r["prompt_tokens"] is not None]
        cached = [r["cached_tokens"] for r in rows if r["cached_tokens"] is not None]
        out.append(
            {
                "turn": turn,
                "ok": len(rows),
                "failed": failures.get(turn, 0),
                "ttft_ms": describe(ttft),
                "e2e_ms": describe(e2e),
                "mean_prompt_tokens": sum(prompt) / len(prompt) if prompt else None,
                "mean_cached_tokens": sum(cached) / len(cached) if cached else None,
                "cached_ratio": sum(cached) / sum(prompt) if cached and sum(prompt) else None,
            }
        )
    return out


def _per_conversation(sessions: list[sqlite3.Row]) -> dict[str, Any]:
    outcomes = Counter(s["outcome"] for s in sessions)
    durations = [(s["t_end_ns"] - s["t_start_ns"]) / 1e9 for s in sessions]
    planned = sum(s["turns_planned"] for s in sessions)
    ok = sum(s["turns_ok"] for s in sessions)
    return {
        "sessions": len(sessions),
        "outcomes": dict(sorted(outcomes.items())),
        "duration_s": describe(durations),
        "turns_completed": describe([s["turns_ok"] for s in sessions]),
        "turns_failed": sum(s["turns_failed"] for s in sessions),
        "turn_success_rate": ok / planned if planned else None,
        "sessions_fully_ok": sum(
            1 for s in sessions if s["outcome"] == "completed" and s["turns_failed"] == 0
        ),
        "dropped_messages": sum(s["dropped_messages"] for s in sessions),
        "session_gate_wait_ms": describe([s["gate_wait_ns"] / MS for s in sessions]),
    }


def _verdict(sent: list[sqlite3.Row], ok: int) -> dict[str, Any]:
    """Whether the client or a cap held work back, so latencies from the send understate.

    Judged on every attempt that went out, failed and cancelled ones too: an overloaded client
    may complete nothing at all, and that is exactly when the warning matters.
    """
    lag = sorted((r["t_sent_ns"] - r["t_intended_ns"]) / MS for r in sent)
    gate = sorted(r["gate_wait_ns"] / MS for r in sent)
    lag_p99 = percentile(lag, 99) if lag else 0.0
    gate_p99 = percentile(gate, 99) if gate else 0.0
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
        notes.append(f"no request succeeded: all {len(sent)} attempts failed or were cancelled")
    return {
        "client_bound": client_bound,
        "capacity_bound": capacity_bound,
        "schedule_lag_p99_ms": lag_p99,
        "gate_wait_p99_ms": gate_p99,
        "notes": notes,
        "threshold_ms": CLIENT_BOUND_LAG_MS,
    }


APPROXIMATE_LENGTHS = "token lengths are approximate (no tokenizer.json, no /tokenize)"
"""The note of a run whose texts were sized without the server's tokenizer."""


def summarize(db_path: Path) -> dict[str, Any]:
    """The run's summary (the content of summary.json) from its events.db."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        runs = _rows(conn, "SELECT * FROM runs")
        attempts = _rows(conn, "SELECT * FROM requests ORDER BY id")
        sessions = _rows(conn, "SELECT * FROM sessions")
    finally:
        conn.close()
    run = dict(runs[0]) if runs else {}
    config = json.loads(run.pop("config_json", None) or "{}")
    main = [r for r in attempts if r["stage"] != "warmup"]
    ok = [r for r in main if r["status"] == "ok"]
    failed = [r for r in main if r["status"] == "error"]
    cancelled = [r for r in main if r["status"] == "cancelled"]
    req = _request_metrics(ok)
    window_s = 0.0
    if ok:
        window_s = (max(r["t_end_ns"] for r in ok) - min(r["t_sent_ns"] for r in main)) / 1e9
    out_tokens = sum(r["completion_tokens"] or 0 for r in ok)
    in_tokens = sum(r["prompt_tokens"] or 0 for r in ok)
    cached = sum(r["cached_tokens"] or 0 for r in ok)
    length_source = (config.get("resolved") or {}).get("length_source")
    verdict = _verdict([r for r in main if r["t_sent_ns"]], len(ok))
    if length_source == "approximate":
        verdict["notes"].append(APPROXIMATE_LENGTHS)
    return {
        "run": run,
        "config": config,
        "length_source": length_source,
        "requests": {
            "attempts": len(attempts),
            "warmup": len(attempts) - len(main),
            "ok": len(ok),
            "failed": len(failed),
            "cancelled": len(cancelled),
            "token_sources": dict(Counter(r["token_source"] for r in ok)),
            "window_s": window_s,
            "throughput": {
                "requests_per_s": len(ok) / window_s if window_s else None,
                "output_tokens_per_s": out_tokens / window_s if window_s else None,
                "total_tokens_per_s": (out_tokens + in_tokens) / window_s if window_s else None,
            },
            "cached_token_ratio": cached / in_tokens if in_tokens else None,
            **req,
        },
        "per_turn": _per_turn(ok, failed),
        "per_conversation": _per_conversation([s for s in sessions if s["stage"] != "warmup"]),
        "errors": dict(sorted(Counter(r["error_kind"] for r in failed + cancelled).items())),
        "verdict": verdict,
    }
