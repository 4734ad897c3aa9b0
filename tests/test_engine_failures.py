"""Failed-turn policies against the simulator's injected faults (issue 3 s3, issue 6)."""

from __future__ import annotations

import itertools
import re
import urllib.request
from pathlib import Path

from conftest import SimProcess, start_sim
from runs import assert_one_in_flight, run_bench
from turnbench.tokens.template import MESSAGE_OVERHEAD


def _sim_counts(sim: SimProcess) -> dict[str, float]:
    text = urllib.request.urlopen(sim.url + "/metrics", timeout=10).read().decode()
    out = {}
    pattern = r'^turnbench_sim_requests_total\{[^}]*outcome="(\w+)"[^}]*\} ([\d.e+]+)$'
    for m in re.finditer(pattern, text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def _config(sim: SimProcess, policy: dict, turns: int = 5, conversations: int = 8) -> dict:
    return {
        "target": {"url": sim.v1, "timeouts": {"first_token_s": 2, "idle_s": 2}},
        "workload": {
            "type": "synthetic",
            "conversations": conversations,
            "turns": turns,
            "input_tokens": 13,
            "output_tokens": 6,
        },
        "session": {"ignore_eos": True, **policy},
        "load": {"mode": "users", "users": 4},
    }


def test_continue_builds_the_next_turn_from_the_last_good_context(tmp_path: Path) -> None:
    sim = start_sim("--zero-delay", "--fault", "http500=0.3", "--seed", "5")
    try:
        result = run_bench(tmp_path, _config(sim, {"on_failure": "continue"}, turns=6))
        counts = _sim_counts(sim)
    finally:
        sim.stop()
    rows = result.attempts
    failed = [r for r in rows if r["status"] == "error"]
    assert failed and {r["error_kind"] for r in failed} == {"http_5xx"}
    assert all(r["http_status"] == 500 for r in failed)
    assert len(rows) == 8 * 6  # every turn tried once
    assert sum(counts.values()) == len(rows)
    assert counts.get("http500", 0) == len(failed)
    for session_rows in result.by_session().values():
        good = [r for r in session_rows if r["status"] == "ok"]
        for a, b in itertools.pairwise(good):
            assert b["prompt_tokens"] == a["prompt_tokens"] + 6 + 2 * MESSAGE_OVERHEAD + 13
    assert {s["outcome"] for s in result.sessions} == {"completed"}
    assert sum(s["turns_failed"] for s in result.sessions) == len(failed)
    summary = result.summary
    assert summary["requests"]["failed"] == len(failed)
    assert summary["requests"]["ttft_ms"]["count"] == len(rows) - len(failed)


def test_retry_makes_a_row_per_attempt_and_backs_off(tmp_path: Path) -> None:
    sim = start_sim("--zero-delay", "--fault", "http500=0.4", "--seed", "9")
    try:
        policy = {
            "on_failure": "retry",
            "retry": {"max_attempts": 6, "backoff_s": 0.02, "jitter": 0.0},
        }
        result = run_bench(tmp_path, _config(sim, policy, turns=4))
        counts = _sim_counts(sim)
    finally:
        sim.stop()
    rows = result.attempts
    assert sum(counts.values()) == len(rows)
    assert max(r["attempt"] for r in rows) > 1
    by_turn: dict[tuple[str, int], list] = {}
    for r in rows:
        by_turn.setdefault((r["session_id"], r["turn_index"]), []).append(r)
    for attempts in by_turn.values():
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert all(a["status"] == "error" for a in attempts[:-1])
        for n, (a, b) in enumerate(itertools.pairwise(attempts), start=1):
            assert b["t_sent_ns"] - a["t_end_ns"] >= 0.02 * 2 ** (n - 1) * 1e9 - 1e6
    assert_one_in_flight(result)


def test_retry_honours_retry_after_on_429(tmp_path: Path) -> None:
    sim = start_sim(
        "--zero-delay", "--fault", "http429=0.5", "--seed", "2", "--set", "retry_after_s=1"
    )
    try:
        policy = {"on_failure": "retry", "retry": {"max_attempts": 4, "backoff_s": 0.01}}
        result = run_bench(tmp_path, _config(sim, policy, turns=2, conversations=3))
    finally:
        sim.stop()
    retried = [r for r in result.attempts if r["attempt"] > 1]
    assert retried
    prev = {(r["session_id"], r["turn_index"], r["attempt"]): r for r in result.attempts}
    for r in retried:
        before = prev[(r["session_id"], r["turn_index"], r["attempt"] - 1)]
        assert before["error_kind"] == "rate_limited"
        assert r["t_sent_ns"] - before["t_end_ns"] >= 0.99e9


def test_abort_skips_the_rest_of_the_conversation(tmp_path: Path) -> None:
    sim = start_sim("--zero-delay", "--fault", "http500=0.3", "--seed", "4")
    try:
        result = run_bench(tmp_path, _config(sim, {"on_failure": "abort"}, turns=6))
    finally:
        sim.stop()
    sessions = {s["session_id"]: s for s in result.sessions}
    aborted = [s for s in sessions.values() if s["outcome"] == "aborted"]
    assert aborted
    for sid, rows in result.by_session().items():
        failed_at = [r["turn_index"] for r in rows if r["status"] == "error"]
        if failed_at:
            assert sessions[sid]["outcome"] == "aborted"
            assert rows[-1]["status"] == "error" and rows[-1]["turn_index"] == failed_at[0]
        else:
            assert sessions[sid]["outcome"] == "completed" and len(rows) == 6
    counts = result.summary["per_conversation"]["outcomes"]
    assert counts["aborted"] == len(aborted)
