"""WEKA / AgentX traces replayed against the simulator: all four in the issue's done-when
command (sub-agents in `sessions`, parents waiting for them, siblings at once, tool waits,
the server's cache matching the hash ids), the recorded schedule, and each API.

Expected values are computed here from the trace files, never copied from a run.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runs import RunResult, assert_one_in_flight, run_bench
from test_weka import DATA, TRACES, calls, ideal_hit, markers, plans_of, raw
from turnbench.workload.conversation import walk

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared WEKA traces not present")
SIM_ARGS = ["--zero-delay", "--max-model-len", "200000", "--kv-cache-tokens", "4000000"]
SCALE = 0.002
NS = 1_000_000_000


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """The issue's done-when command over the Anthropic API, times scaled by 0.002."""
    tmp = tmp_path_factory.mktemp("weka")
    out = tmp / "runs"
    proc = subprocess.run(
        [
            sys.executable, "-m", "turnbench", "run", "--dataset", str(DATA),
            "--api", "anthropic", "--no-live", "--out", str(out),
            "--set", f"workload.weka.time_scale={SCALE}",
            "--set", f"target.sim_args={json.dumps(SIM_ARGS)}",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [path] = list(out.iterdir())
    return RunResult(path, proc.stdout)


def test_all_four_traces_replay_with_their_sub_agents(folder_run: RunResult) -> None:
    traces = [json.loads(f.read_text()) for f in TRACES]
    rows = folder_run.attempts
    n_calls = sum(
        len(calls(t["requests"])) + sum(len(m["requests"]) for m in markers(t["requests"]))
        for t in traces
    )
    assert len(rows) == n_calls and all(r["status"] == "ok" for r in rows)
    sessions = {s["session_id"]: s for s in folder_run.sessions}
    roots = [s for s in sessions.values() if s["depth"] == 0]
    assert len(roots) == 4 and all(s["outcome"] == "completed" for s in sessions.values())
    subs = [s for s in sessions.values() if s["depth"] == 1]
    assert len(subs) == sum(len(markers(t["requests"])) for t in traces)
    for s in subs:
        assert s["kind"] == "subagent" and s["parent_session_id"] in sessions
        assert s["task_id"] == s["parent_session_id"]
        assert s["session_id"].startswith(s["parent_session_id"] + ".")
    assert_one_in_flight(folder_run)


def test_the_server_caches_what_the_hash_ids_share(folder_run: RunResult) -> None:
    """With a cache that holds everything, the simulator's cached share of prompt tokens is
    the trace's ideal hit from its hash ids (template tokens and replies aside)."""
    traces = [json.loads(f.read_text()) for f in TRACES]
    ideal = sum(ideal_hit(t) / 100 * sum_in(t) for t in traces) / sum(sum_in(t) for t in traces)
    rows = folder_run.attempts
    realised = sum(r["cached_tokens"] for r in rows) / sum(r["prompt_tokens"] for r in rows)
    assert abs(realised - ideal) < 0.02, (realised, ideal)


def sum_in(trace: dict[str, Any]) -> int:
    total = 0
    for r in trace["requests"]:
        rs = r["requests"] if r["type"] == "subagent" else [r]
        total += sum(x["in"] for x in rs)
    return total


def test_a_joining_turn_starts_after_its_sub_agents_ended(folder_run: RunResult) -> None:
    by_session = folder_run.by_session()
    joined = 0
    for s in folder_run.sessions:
        if s["join_turn"] is None:
            continue
        parent = by_session[s["parent_session_id"]]
        turn = next(r for r in parent if r["turn_index"] == s["join_turn"])
        last = max(r["t_end_ns"] for r in by_session[s["session_id"]])
        assert turn["t_intended_ns"] >= last and turn["t_sent_ns"] >= s["t_end_ns"] - 1
        joined += 1
    assert joined >= 7  # every joined sub-agent of the four traces was checked


def test_sibling_sub_agents_run_at_the_same_time(folder_run: RunResult) -> None:
    subs = [s for s in folder_run.sessions if s["depth"] == 1]
    overlapping = 0
    for a in subs:
        for b in subs:
            same_parent = a["parent_session_id"] == b["parent_session_id"]
            if same_parent and a["branch"] < b["branch"] and b["t_start_ns"] < a["t_end_ns"]:
                overlapping += 1
    assert overlapping >= 1


def test_tool_waits_are_recorded_as_planned(folder_run: RunResult) -> None:
    plans = {p.id: p for p in plans_of(DATA, time_scale=SCALE)}
    sessions = {s["session_id"]: s for s in folder_run.sessions}
    tool_rows = 0
    for r in folder_run.attempts:
        conv = sessions[r["session_id"]]["conversation_id"]
        plan = next(s for p in plans.values() for s, _ in walk(p) if s.id == conv)
        turn = plan.turns[r["turn_index"] - 1]
        expected = turn.tool_time_s if turn.tool_time_s is not None else 0.0
        assert r["tool_wait_ns"] == int(expected * NS)
        tool_rows += turn.tool_time_s is not None
    assert tool_rows > 100


def test_the_console_report_shows_the_agent_tasks(folder_run: RunResult) -> None:
    assert "requests" in folder_run.output
    assert folder_run.summary["run"]["end_reason"] != "target_unreachable"


def _one_trace(tmp_path: Path, name: str, api: str, **weka: Any) -> RunResult:
    """One trace over `api`; replies of exactly `out` tokens (`ignore_eos`), as recorded."""
    return run_bench(
        tmp_path,
        {
            "target": {"api": api, "sim_args": SIM_ARGS},
            "workload": {"type": "dataset", "path": str(DATA / name), "weka": weka},
            "session": {"ignore_eos": True},
        },
    )


def test_the_recorded_schedule_holds(tmp_path: Path) -> None:
    name = "trace_0291.json"
    # 0.005: the recorded gaps (10 s and more) stay 50 ms and more, above a request's latency
    result = _one_trace(tmp_path, name, "chat", timing="recorded", time_scale=0.005)
    [plan] = plans_of(DATA / name, timing="recorded", time_scale=0.005)
    sessions = {s["session_id"]: s for s in result.sessions}
    by_session = result.by_session()
    root = next(s for s in sessions.values() if s["depth"] == 0)
    for r in by_session[root["session_id"]]:
        at_s = plan.turns[r["turn_index"] - 1].at_s
        if at_s is not None:
            assert r["t_intended_ns"] - root["t_intended_ns"] >= int(at_s * NS) - 1
        assert r["t_sent_ns"] >= r["t_intended_ns"]
    for number, child in enumerate(plan.children, 1):
        s = sessions[f"{root['session_id']}.{number}"]
        assert child.at_s is not None
        assert s["t_intended_ns"] - root["t_intended_ns"] >= int(child.at_s * NS) - 1
    assert len(result.attempts) == sum(len(s.turns) for s, _ in walk(plan))


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_each_api_replays_a_trace_with_sub_agents(tmp_path: Path, api: str) -> None:
    result = _one_trace(tmp_path, "trace_0291.json", api, time_scale=SCALE)
    trace = raw("trace_0291.json")
    n = len(calls(trace["requests"])) + sum(len(m["requests"]) for m in markers(trace["requests"]))
    rows = result.attempts
    assert len(rows) == n and all(r["status"] == "ok" for r in rows)
    assert max(r["depth"] for r in rows) == 1
    # with replies of `out` tokens, each prompt is its call's recorded `in` (template aside)
    planned = {s.id: s for s, _ in walk(plans_of(DATA / "trace_0291.json")[0])}
    sessions = {s["session_id"]: s["conversation_id"] for s in result.sessions}
    for r in rows:
        recorded = planned[sessions[r["session_id"]]].metadata["input_tokens"]
        assert math.isclose(r["prompt_tokens"], recorded[r["turn_index"] - 1], rel_tol=0.01)
