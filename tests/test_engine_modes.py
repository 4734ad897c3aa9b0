"""Load modes against the simulator, checked from events.db (issue 3, section 4)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from runs import assert_one_in_flight, peak_concurrency, request_intervals, run_bench

NS = 1e9
FAST_SIM = ["--zero-delay"]


def _cfg(
    load: dict,
    *,
    turns: int = 3,
    think: float = 0.0,
    sim: list[str] | None = None,
    conversations: int = 12,
    **extra: dict,
) -> dict:
    return {
        "name": "t",
        "seed": 3,
        "target": {"sim_args": sim if sim is not None else FAST_SIM},
        "workload": {
            "type": "synthetic",
            "conversations": conversations,
            "turns": turns,
            "input_tokens": 20,
            "output_tokens": 8,
        },
        "session": {"think_time": think, "ignore_eos": True},
        "load": load,
        **extra,
    }


def _check_turn_order(result, think_s: float) -> None:
    """Turn k+1 goes out after turn k's reply plus its think time."""
    for sid, rows in result.by_session().items():
        rows = sorted(rows, key=lambda r: (r["turn_index"], r["attempt"]))
        assert [r["turn_index"] for r in rows] == list(range(1, len(rows) + 1)), sid
        for a, b in itertools.pairwise(rows):
            assert b["t_intended_ns"] >= a["t_end_ns"] + think_s * NS - 1, sid
            assert b["t_sent_ns"] >= a["t_end_ns"] + think_s * NS - 1, sid


def test_parallel_starts_every_first_turn_at_once(tmp_path: Path) -> None:
    result = run_bench(tmp_path, _cfg({"mode": "parallel"}, think=0.05))
    firsts = [r for r in result.attempts if r["turn_index"] == 1]
    assert len(firsts) == 12
    assert {r["t_intended_ns"] for r in firsts} == {0}
    spread_ms = (max(r["t_sent_ns"] for r in firsts) - min(r["t_sent_ns"] for r in firsts)) / 1e6
    assert spread_ms < 50, spread_ms
    assert len(result.attempts) == 36 and all(r["status"] == "ok" for r in result.attempts)
    assert_one_in_flight(result)
    _check_turn_order(result, 0.05)
    assert {s["outcome"] for s in result.sessions} == {"completed"}


@pytest.mark.parametrize("workers", [1, 2])
def test_sequential_plays_one_conversation_after_another(tmp_path: Path, workers: int) -> None:
    """Each conversation is due the moment the last one ended (as its worker recorded it),
    so the time the coordinator takes to learn of the end shows as lag, never hides."""
    cfg = _cfg({"mode": "sequential"}, conversations=5, think=0.02, engine={"workers": workers})
    result = run_bench(tmp_path, cfg)
    sessions = sorted(result.sessions, key=lambda s: s["t_intended_ns"])
    assert len(sessions) == 5
    for a, b in itertools.pairwise(sessions):
        assert b["t_intended_ns"] == a["t_end_ns"]
        assert b["t_start_ns"] >= a["t_end_ns"]
    assert_one_in_flight(result)
    _check_turn_order(result, 0.02)


def test_users_keeps_exactly_n_sessions_active(tmp_path: Path) -> None:
    users = 4
    result = run_bench(
        tmp_path,
        {
            **_cfg(
                {"mode": "users", "users": users, "duration_s": 3, "end": "cut"},
                think=0.05,
                sim=["--ttft-base-ms", "5", "--decode-ms-base", "2"],
            ),
            "workload": {
                "type": "synthetic",
                "conversations": 10,
                "cycle": True,
                "turns": 3,
                "input_tokens": 20,
                "output_tokens": 8,
            },
        },
    )
    sessions = result.sessions
    assert len(sessions) > users
    events = sorted(
        [(s["t_start_ns"], 1) for s in sessions] + [(s["t_end_ns"], -1) for s in sessions]
    )
    active = peak = 0
    weighted = 0.0
    last_t = events[0][0]
    t_first_end = min(s["t_end_ns"] for s in sessions)
    t_stop = 3 * NS
    for t, step in events:
        lo, hi = max(last_t, t_first_end), min(t, t_stop)
        if hi > lo:
            weighted += active * (hi - lo)
        last_t = t
        active += step
        peak = max(peak, active)
    assert peak == users
    mean_active = weighted / (t_stop - t_first_end)
    assert mean_active > users - 0.05, mean_active
    assert_one_in_flight(result)
    _check_turn_order(result, 0.05)
    assert any(s["outcome"] == "unfinished" for s in sessions)  # cut at the end


@pytest.mark.parametrize("end", ["cut", "drain"])
def test_a_users_next_conversation_waits_on_the_worker_playing_its_last(
    tmp_path: Path, end: str
) -> None:
    """With worker processes, a user's next conversation is handed to the worker playing its
    current one and starts there, due at the end that worker recorded; none due at or after
    the run's end starts, whatever the end policy."""
    users, duration_s = 3, 1.5
    cfg = _cfg(
        {"mode": "users", "users": users, "duration_s": duration_s, "end": end},
        think=0.01,
        sim=["--ttft-base-ms", "3", "--decode-ms-base", "1"],
        engine={"workers": 2},
    )
    cfg["workload"]["cycle"] = True
    result = run_bench(tmp_path, cfg)
    sessions = result.sessions
    assert len(sessions) > 4 * users
    ends = {(s["worker"], s["t_end_ns"]) for s in sessions}
    unchained = [s for s in sessions if (s["worker"], s["t_intended_ns"]) not in ends]
    assert len(unchained) == users  # only each user's first conversation
    assert {s["worker"] for s in unchained} == {0, 1}
    assert all(s["t_intended_ns"] < duration_s * NS for s in sessions)
    assert_one_in_flight(result)
    _check_turn_order(result, 0.01)


def test_session_rate_poisson_arrivals_are_exponential(tmp_path: Path) -> None:
    rate = 40.0
    result = run_bench(
        tmp_path,
        {
            **_cfg({"mode": "session-rate", "rate": rate, "duration_s": 5}, turns=2),
            "workload": {
                "type": "synthetic",
                "conversations": 50,
                "cycle": True,
                "turns": 2,
                "input_tokens": 10,
                "output_tokens": 4,
            },
        },
    )
    starts = sorted(s["t_intended_ns"] / NS for s in result.sessions)
    gaps = sorted(b - a for a, b in itertools.pairwise(starts))
    n = len(gaps)
    assert 120 < n < 290, n
    # Kolmogorov-Smirnov distance to Exp(rate), critical value at alpha = 0.01.
    d = max(
        max(abs((i + 1) / n - (1 - math.exp(-rate * g))), abs(i / n - (1 - math.exp(-rate * g))))
        for i, g in enumerate(gaps)
    )
    assert d < 1.63 / math.sqrt(n), d
    lags = [(s["t_start_ns"] - s["t_intended_ns"]) / 1e6 for s in result.sessions]
    assert sorted(lags)[len(lags) // 2] < 20
    assert_one_in_flight(result)


def test_max_in_flight_caps_requests_and_records_the_wait(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        _cfg(
            {"mode": "parallel", "max_in_flight": 2},
            conversations=6,
            turns=2,
            sim=["--ttft-base-ms", "20", "--decode-ms-base", "5"],
        ),
    )
    attempts = result.attempts
    assert peak_concurrency(request_intervals(attempts)) <= 2
    assert max(r["gate_wait_ns"] for r in attempts) > 0
    assert sum(1 for r in attempts if r["gate_wait_ns"] > 0) >= 4


def test_max_requests_and_warmup(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            **_cfg(
                {"mode": "users", "users": 2, "max_requests": 20, "warmup_s": 0.3},
                think=0.05,
                sim=["--ttft-base-ms", "10", "--decode-ms-base", "3"],
            ),
            "workload": {
                "type": "synthetic",
                "conversations": 4,
                "cycle": True,
                "turns": 4,
                "input_tokens": 10,
                "output_tokens": 4,
            },
        },
    )
    attempts = result.attempts
    assert len(attempts) == 20
    stages = {r["stage"] for r in attempts}
    assert stages == {"warmup", "main"}
    for r in attempts:
        assert (r["stage"] == "warmup") == (r["t_intended_ns"] < 0.3 * NS)
    summary = result.summary
    assert summary["requests"]["warmup"] == sum(r["stage"] == "warmup" for r in attempts)
    assert summary["requests"]["ok"] == sum(r["stage"] == "main" for r in attempts)
