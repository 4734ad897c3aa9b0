"""Agentic sessions from the command line, as the issue's done-when types them: the WEKA
traces replayed over each API against the simulator, and synthetic agents in the load modes
(open loop, closed loop, caps), every graph checked from events.db."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cli_options import turnbench
from conftest import SimProcess
from graph import check_dependencies

WEKA = Path(__file__).parent.parent.parent / "shared" / "data" / "weka"
QUICK_TOOLS = "workload.tool_latency_s={dist: uniform, min: 0.01, max: 0.08}"
"""Tools that answer in tens of ms: the default (lognormal, mean 0.5 s, up to 30 s) makes a
task of the synthetic agent last up to minutes, and these tests check the graph, not the waits."""


def _rows(run: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(run / "events.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def _only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.mark.skipif(not WEKA.is_dir(), reason="shared WEKA traces not present")
@pytest.mark.parametrize("api", ["chat"])  # anthropic, responses: tests/test_weka_replay.py
def test_the_weka_traces_replay_with_sub_agents_in_parallel_and_parents_waiting(
    api: str, tmp_path: Path, fast_sim: SimProcess
) -> None:
    proc = turnbench(
        "run", "--dataset", str(WEKA), "--api", api, "--target", fast_sim.url,
        "--set", "workload.weka.time_scale=0.002", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    run = _only_run(tmp_path / "out")
    sessions = _rows(run, "SELECT * FROM sessions")
    attempts = _rows(run, "SELECT * FROM requests")
    assert all(a["status"] == "ok" for a in attempts), {a["error_message"] for a in attempts}
    roots = [s for s in sessions if s["parent_session_id"] is None]
    subs = [s for s in sessions if s["parent_session_id"] is not None]
    # the four traces: 100 parent requests, 9 sub-agents with 104 requests between them
    assert len(roots) == 4 and len(subs) == 9
    assert sum(s["turns_ok"] for s in roots) == 100
    assert sum(s["turns_ok"] for s in subs) == 104
    assert all(s["depth"] == 1 and s["kind"] == "subagent" for s in subs)
    assert all(s["outcome"] == "completed" for s in sessions)
    assert check_dependencies(sessions, attempts) >= 200
    # trace_0277's sub-agents 2 and 3 overlap in the recording: they overlap here too
    spans = {
        s["session_id"]: (s["t_start_ns"], s["t_end_ns"])
        for s in subs
        if s["conversation_id"] in ("trace_0277/agent_002", "trace_0277/agent_003")
    }
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["agents"]["tasks"] == 4
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "waiting for sub-agents" in page or "tool wait" in page
    assert "└──" in page or "u2514" in page  # sub-agents' lanes nested (JSON-escaped)


def test_open_loop_arrivals_and_the_session_limit_count_agent_tasks(
    tmp_path: Path, fast_sim: SimProcess
) -> None:
    """Open loop: sessions/s are agent tasks arriving (sub-agents are not arrivals); and
    `--sessions 6` plays six whole trees."""
    proc = turnbench(
        "run", "--agent", "2:3", "--mode", "session-rate", "--rate", "20", "--sessions", "6",
        "--target", fast_sim.url, "--set", QUICK_TOOLS, "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run = _only_run(tmp_path / "out")
    sessions = _rows(run, "SELECT * FROM sessions")
    roots = [s for s in sessions if s["parent_session_id"] is None]
    assert len(roots) == 6
    assert len(sessions) == 6 * 4  # each task: its root and three sub-agents
    by_id = {s["session_id"]: s for s in sessions}
    for s in sessions:
        if s["parent_session_id"] is not None:  # started by its parent, not by the arrivals
            assert s["t_intended_ns"] > by_id[s["parent_session_id"]]["t_intended_ns"]
    intended = sorted(s["t_intended_ns"] for s in roots)
    assert intended[-1] - intended[0] < 6e9  # 20/s: six arrivals well within seconds
    assert check_dependencies(sessions, _rows(run, "SELECT * FROM requests")) > 0


def test_with_worker_processes_every_branch_of_an_agent_runs_on_its_owner(
    tmp_path: Path, fast_sim: SimProcess
) -> None:
    """Two worker processes: each agent task's whole tree is played by the worker that
    started its root (a fork copies its parent's history without crossing processes)."""
    proc = turnbench(
        "run", "--agent", "2:2:2", "--workers", "2", "--sessions", "6", "--target",
        fast_sim.url, "--set", QUICK_TOOLS, "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run = _only_run(tmp_path / "out")
    sessions = _rows(run, "SELECT * FROM sessions")
    attempts = _rows(run, "SELECT * FROM requests")
    assert len(sessions) == 6 * 7  # each task: 1 + 2 + 4 sessions
    assert {s["worker"] for s in sessions} == {0, 1}
    workers: dict[str, set[int]] = {}
    for row in sessions + attempts:
        workers.setdefault(row["task_id"], set()).add(row["worker"])
    assert len(workers) == 6 and all(len(w) == 1 for w in workers.values()), workers
    assert check_dependencies(sessions, attempts) > 0
