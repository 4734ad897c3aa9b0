"""Agent-task metrics (docs/metrics.md, "Agent tasks") on hand-built events.db files whose
answers follow from their rows, then on a real agent tree played against the simulator."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from rich.console import Console

from cli_options import turnbench
from handmade import session_record, write_events_db
from runs import RunResult, run_bench
from test_report_browser import _artifact, _drawn, _hover_value, _open, launch
from turnbench.client.attempt import Attempt
from turnbench.metrics.agents import MAX_SHOWN_TASKS, union_lengths
from turnbench.metrics.model import to_json
from turnbench.metrics.summary import summarize as summary_of
from turnbench.record.schema import SessionRecord
from turnbench.report.agents import agent_tables
from turnbench.report.console import print_report


def summarize(db: Path) -> dict[str, Any]:
    """The run's summary as summary.json holds it."""
    return msgspec.json.decode(to_json(summary_of(db)))


NS = 1_000_000_000


def _s(seconds: float) -> int:
    return round(seconds * NS)


def _t(seconds: float) -> int:
    """A time of the hand-built rows: 1 s after the run's start (a `t_sent_ns` of 0 means
    never sent)."""
    return _s(1.0 + seconds)


def _req(
    sid: str,
    turn: int,
    sent: float,
    end: float,
    *,
    ttft: float = 0.1,
    tool: float = 0.0,
    status: str = "ok",
    stage: str = "main",
    depth: int = 0,
) -> Attempt:
    """An attempt of session `sid` (task: the id's first part) sent at `sent` s, due then
    (a tool wait of `tool` s ending there), first token `ttft` s later."""
    return Attempt(
        stage=stage,
        worker=0,
        session_id=sid,
        conversation_id=sid,
        turn_index=turn,
        attempt=1,
        t_intended_ns=_t(sent),
        t_sent_ns=_t(sent),
        t_first_token_ns=_t(sent + ttft) if status == "ok" else None,
        t_end_ns=_t(end),
        completion_tokens=8,
        prompt_tokens=32,
        status=status,
        error_kind=None if status == "ok" else "http_5xx",
        task_id=sid.split(".")[0],
        parent_session_id=sid.rsplit(".", 1)[0] if "." in sid else None,
        depth=depth,
        branch=int(sid.rsplit(".", 1)[1]) if "." in sid else 0,
        tool_wait_ns=_s(tool),
    )


def _session(
    sid: str,
    start: float,
    end: float,
    *,
    kind: str = "session",
    outcome: str = "completed",
    stage: str = "main",
) -> SessionRecord:
    parent = sid.rsplit(".", 1)[0] if "." in sid else None
    return msgspec.structs.replace(
        session_record(sid, _t(start), _t(end), outcome=outcome, stage=stage),
        task_id=sid.split(".")[0],
        parent_session_id=parent,
        depth=sid.count("."),
        branch=int(sid.rsplit(".", 1)[1]) if parent else 0,
        kind=kind,
    )


def _tasks() -> tuple[list[Attempt], list[SessionRecord]]:
    """Task a (0-10 s): root, a sub-agent with a grandchild, a fork whose request fails and a
    background sub-agent; task b (0-4 s) a plain conversation; task c cut by the run's end;
    task w a warm-up one (left out).

    a's requests in flight: [0,1] [1.5,3] (a.1.1's [1.6,2] inside) [2,2.5] [3.5,4.5] [5.5,5.8]
    [6,7] [8,9]: model 5.8 s. Tool waits [3,3.5] and [5,6], of which 0.3 s (a.3's [5.5,5.8])
    had a request in flight: tool 1.2 s. Waiting the rest: 10 − 7 = 3 s.
    """
    attempts = [
        _req("a", 1, 0.0, 1.0, ttft=0.2),
        _req("a.1", 1, 1.5, 3.0, ttft=0.3, depth=1),
        _req("a.1.1", 1, 1.6, 2.0, ttft=0.05, depth=2),
        _req("a.2", 1, 2.0, 2.5, status="error", depth=1),
        _req("a.1", 2, 3.5, 4.5, ttft=0.4, tool=0.5, depth=1),
        _req("a.3", 1, 5.5, 5.8, ttft=0.1, depth=1),
        _req("a", 2, 6.0, 7.0, ttft=0.2, tool=1.0),
        _req("a", 3, 8.0, 9.0, ttft=0.2),
        _req("b", 1, 0.0, 1.0, ttft=0.6),
        _req("b", 2, 2.0, 3.0, ttft=0.6),
        _req("c", 1, 5.0, 6.0, ttft=0.2),
        _req("c.1", 1, 6.0, 8.0, ttft=0.3, tool=0.2, status="cancelled", depth=1),
        _req("w", 1, 0.0, 0.5, stage="warmup"),
        _req("w.1", 1, 0.5, 1.0, stage="main", depth=1),
    ]
    sessions = [
        _session("a.1.1", 1.6, 2.0, kind="subagent"),
        _session("a.1", 1.5, 4.5, kind="subagent"),
        _session("a.2", 2.0, 2.5, kind="fork"),
        _session("a.3", 5.5, 5.8, kind="subagent"),
        _session("a", 0.0, 10.0),
        _session("b", 0.0, 4.0),
        _session("c.1", 6.0, 8.0, kind="subagent", outcome="unfinished"),
        _session("c", 5.0, 8.0, outcome="unfinished"),
        _session("w.1", 0.5, 1.0, kind="subagent"),
        _session("w", 0.0, 1.0, stage="warmup"),
    ]
    return attempts, sessions


@pytest.fixture
def agents(tmp_path: Path) -> dict[str, Any]:
    attempts, sessions = _tasks()
    return summarize(write_events_db(tmp_path / "events.db", attempts, sessions))["agents"]


def test_a_task_is_its_whole_tree_and_its_outcome_the_worst_of_its_sessions(
    agents: dict[str, Any],
) -> None:
    assert agents["tasks"] == 3  # a, b, c; w started in the warm-up
    assert agents["outcomes"] == {"completed": 2, "unfinished": 1}
    assert agents["completed"] == 2
    assert agents["sessions"] == 8  # a + 4, b, c + 1
    assert (agents["subagents"], agents["forks"], agents["max_depth"]) == (4, 1, 2)
    assert (agents["requests"], agents["failed_requests"]) == (12, 1)
    assert agents["tasks_with_failed_requests"] == 1
    # per completed task (a, b)
    assert agents["requests_per_task"]["max"] == 8 and agents["requests_per_task"]["min"] == 2
    assert agents["subagents_per_task"]["max"] == 3
    assert agents["forks_per_task"]["mean"] == pytest.approx(0.5)
    assert agents["depth_per_task"]["max"] == 2 and agents["depth_per_task"]["min"] == 0


def test_completion_time_splits_into_model_tool_and_waiting(agents: dict[str, Any]) -> None:
    completion = agents["completion_s"]
    assert (completion["count"], completion["max"], completion["min"]) == (2, 10.0, 4.0)
    assert agents["model_s"]["max"] == pytest.approx(5.8)  # a
    assert agents["model_s"]["min"] == pytest.approx(2.0)  # b: [0,1] and [2,3]
    assert agents["tool_s"]["max"] == pytest.approx(1.2)
    assert agents["tool_s"]["min"] == 0.0
    assert agents["waiting_s"]["max"] == pytest.approx(3.0)
    assert agents["waiting_s"]["min"] == pytest.approx(2.0)
    shares = agents["time_shares"]
    assert shares["model"] == pytest.approx(7.8 / 14)
    assert shares["tool"] == pytest.approx(1.2 / 14)
    assert shares["waiting"] == pytest.approx(5.0 / 14)
    split = {row["task_id"]: row for row in agents["split"]}
    assert set(split) == {"a", "b"}
    a = split["a"]
    assert a["model_s"] + a["tool_s"] + a["waiting_s"] == pytest.approx(a["completion_s"])


def test_latencies_by_depth_and_by_kind(agents: dict[str, Any]) -> None:
    depth = {row["depth"]: row for row in agents["by_depth"]}
    assert set(depth) == {0, 1, 2}
    # depth 0: a's three (0.2 s) and b's two (0.6 s) and c's one (0.2 s)
    assert depth[0]["requests_ok"] == 6 and depth[0]["sessions"] == 3
    assert depth[0]["ttft_ms"]["max"] == pytest.approx(600)
    assert depth[0]["ttft_ms"]["p50"] == pytest.approx(200)
    # depth 1: a.1's two, a.3's one ok; a.2 failed; c.1 cancelled (neither)
    assert (depth[1]["requests_ok"], depth[1]["requests_failed"]) == (3, 1)
    assert depth[1]["ttft_ms"]["p50"] == pytest.approx(300)
    assert depth[1]["e2e_ms"]["max"] == pytest.approx(1500)
    assert depth[2]["ttft_ms"]["max"] == pytest.approx(50)
    kind = agents["by_kind"]
    assert list(kind) == ["session", "subagent", "fork"]
    assert kind["fork"]["requests_ok"] == 0 and kind["fork"]["requests_failed"] == 1
    assert kind["subagent"]["requests_ok"] == 4  # a.1 ×2, a.1.1, a.3
    assert kind["subagent"]["sessions"] == 4


def test_tasks_per_hour_over_the_measured_window(tmp_path: Path) -> None:
    attempts, sessions = _tasks()
    summary = summarize(write_events_db(tmp_path / "events.db", attempts, sessions))
    window = summary["requests"]["window_s"]
    assert window > 0
    assert summary["agents"]["tasks_per_h"] == pytest.approx(2 / window * 3600)


def test_plain_conversations_and_old_files_have_no_agents_section(tmp_path: Path) -> None:
    plain = [_req("p", 1, 0.0, 1.0), _req("p", 2, 1.5, 2.0)]
    db = write_events_db(tmp_path / "plain.db", plain, [_session("p", 0.0, 2.0)])
    assert summarize(db)["agents"] is None
    old = tmp_path / "old.db"
    attempts, sessions = _tasks()
    write_events_db(old, attempts, sessions)
    conn = sqlite3.connect(old)
    for table, column in (("requests", "tool_wait_ns"), ("sessions", "kind")):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.commit()
    conn.close()
    summary = summary_of(old)
    assert summary.agents is None
    assert agent_tables(summary) == []


def test_a_tool_wait_alone_makes_a_run_agentic(tmp_path: Path) -> None:
    rows = [_req("t", 1, 0.0, 1.0), _req("t", 2, 3.0, 4.0, tool=2.0)]
    session = msgspec.structs.replace(_session("t", 0.0, 4.0), tool_wait_ns=_s(2.0))
    agents = summarize(write_events_db(tmp_path / "events.db", rows, [session]))["agents"]
    assert agents["tasks"] == 1 and agents["subagents"] == 0
    assert agents["tool_s"]["max"] == pytest.approx(2.0)
    assert agents["waiting_s"]["max"] == pytest.approx(0.0)


def _union_by_hand(intervals: list[tuple[float, float]]) -> float:
    total, reach = 0.0, -np.inf
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def test_union_lengths_matches_a_sweep_by_hand() -> None:
    rng = np.random.default_rng(7)
    n = 40
    owner = rng.integers(0, n, 2000)
    start = rng.uniform(0, 100, owner.size).round(1)
    end = start + rng.exponential(3, owner.size).round(1)
    got = union_lengths(owner, start, end, n)
    for o in range(n):
        mine = list(zip(start[owner == o], end[owner == o], strict=True))
        assert got[o] == pytest.approx(_union_by_hand(mine)), o


def test_the_per_task_plot_keeps_a_bounded_spread_of_tasks(tmp_path: Path) -> None:
    count = MAX_SHOWN_TASKS + 50
    attempts, sessions = [], []
    for i in range(count):
        sid = f"k{i}"
        attempts += [_req(sid, 1, i, i + 0.5), _req(sid, 2, i + 1.0, i + 1.5, tool=0.5)]
        sessions.append(msgspec.structs.replace(_session(sid, i, i + 1.5), tool_wait_ns=_s(0.5)))
    agents = summarize(write_events_db(tmp_path / "events.db", attempts, sessions))["agents"]
    split = agents["split"]
    assert len(split) == MAX_SHOWN_TASKS
    assert split[0]["task_id"] == "k0" and split[-1]["task_id"] == f"k{count - 1}"
    assert [r["start_s"] for r in split] == sorted(r["start_s"] for r in split)


def test_console_shows_the_agent_tasks_table(tmp_path: Path) -> None:
    attempts, sessions = _tasks()
    summary = summary_of(write_events_db(tmp_path / "events.db", attempts, sessions))
    buf = io.StringIO()
    print_report(summary, Console(file=buf, width=160))
    text = buf.getvalue()
    assert "Agent tasks (figures per task over completed tasks)" in text
    assert "model / tool / waiting % of completion time" in text
    assert "55.7 / 8.6 / 35.7" in text  # 7.8, 1.2 and 5 s of 14
    assert "Agent tasks by depth and kind" in text
    assert all(label in text for label in ("depth 0", "depth 2", "subagent", "fork"))


AGENTS: dict[str, Any] = {
    "type": "synthetic_agent",
    "agents": 3,
    "system_prompt_tokens": 60,
    "tools": {"count": 3, "tokens": 12},
    "task_tokens": 20,
    "steps": 3,
    "tool_call_tokens": 4,
    "tool_result_tokens": {"dist": "uniform", "min": 10, "max": 40},
    "tool_latency_s": {"dist": "uniform", "min": 0.02, "max": 0.1},
    "output_tokens": 6,
    "subagents": {
        "fan_out": 2,
        "depth": 2,
        "after_step": 1,
        "steps": 2,
        "system_prompt_tokens": 30,
        "task_tokens": 15,
        "result_tokens": 20,
    },
}
"""Three agents, each with two sub-agents that each start two more; tools wait 20-100 ms."""


@dataclass
class Played:
    """A real run of synthetic agents against the simulator (`turnbench run` in this
    process: the coordinator, a worker, the recorder, summary.json and report.html)."""

    result: RunResult
    summary: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.result.path


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Played:
    config = {"name": "agents", "seed": 5, "workload": AGENTS}
    config["load"] = {"mode": "parallel", "sessions": 3}
    result = run_bench(tmp_path_factory.mktemp("agents"), config)
    return Played(result, result.summary)


def _task_split(sessions: list[sqlite3.Row], attempts: list[sqlite3.Row]) -> dict[str, Any]:
    """Each task's model and tool seconds, by hand from its rows."""
    out = {}
    for root in (s for s in sessions if s["parent_session_id"] is None):
        lo, hi = root["t_start_ns"] / NS, root["t_end_ns"] / NS
        mine = [a for a in attempts if a["task_id"] == root["session_id"]]
        model = [(a["t_sent_ns"] / NS, a["t_end_ns"] / NS) for a in mine]
        tools = [
            ((a["t_intended_ns"] - a["tool_wait_ns"]) / NS, a["t_intended_ns"] / NS)
            for a in mine
            if a["tool_wait_ns"]
        ]
        clip = [(max(a, lo), min(b, hi)) for a, b in model + tools]
        out[root["session_id"]] = (
            _union_by_hand(model),
            _union_by_hand(clip) - _union_by_hand(model),
        )
    return out


def test_a_real_agent_run_agrees_with_its_rows(played: Played) -> None:
    agents, rows = played.summary["agents"], played.result
    sessions, attempts = rows.sessions, rows.attempts
    assert all(s["outcome"] == "completed" for s in sessions)
    assert agents["tasks"] == agents["completed"] == 3
    assert agents["sessions"] == len(sessions) and agents["requests"] == len(attempts)
    assert agents["subagents"] == sum(s["kind"] == "subagent" for s in sessions) > 0
    assert agents["max_depth"] == max(s["depth"] for s in sessions) == 2
    by_hand = _task_split(sessions, attempts)
    assert {t["task_id"] for t in agents["split"]} == set(by_hand)
    for task in agents["split"]:
        model, tool = by_hand[task["task_id"]]
        assert task["model_s"] == pytest.approx(model, abs=1e-6)
        assert task["tool_s"] == pytest.approx(tool, abs=1e-6)
        assert task["tool_s"] > 0  # the root's own tool waits had nothing in flight
        parts = task["model_s"] + task["tool_s"] + task["waiting_s"]
        assert parts == pytest.approx(task["completion_s"], abs=1e-6)
    depth = {row["depth"]: row for row in agents["by_depth"]}
    for d, row in depth.items():
        assert row["requests_ok"] == sum(a["depth"] == d and a["status"] == "ok" for a in attempts)
    assert "Agent tasks (figures per task over completed tasks)" in rows.output
    assert "Agent tasks by depth and kind" in rows.output
    page = (played.run_dir / "report.html").read_text()
    assert "panel-agent_split" in page and "panel-agent_ttft_depth" in page


def test_compare_takes_runs_with_and_without_agents(played: Played, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    rows = [_req("p", 1, 0.0, 1.0), _req("p", 2, 1.5, 2.0)]
    write_events_db(plain / "events.db", rows, [_session("p", 0.0, 2.0)])
    out = tmp_path / "compare.html"
    proc = turnbench("compare", str(played.run_dir), str(plain), "--html", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    summary = json.loads((played.run_dir / "summary.json").read_text())["agents"]
    assert "Agent tasks" in proc.stdout and "tool time %" in proc.stdout
    line = next(x for x in proc.stdout.splitlines() if "tasks completed" in x)
    assert f"{summary['completed']}" in line  # A's count; B, with none, shows -
    assert "TTFT p90 ms at depth 1" in proc.stdout


@pytest.fixture(scope="module")
def browser(played: Played) -> Iterator[Any]:
    """Chromium, started after the trees played (see tests/test_report_browser.py)."""
    yield from launch()


def test_the_agent_section_renders_offline_and_hovers(
    browser: Any, played: Played, tmp_path: Path
) -> None:
    page, fetched, errors = _open(browser, played.run_dir / "report.html")
    shown = set(page.eval_on_selector_all(".panel", "els => els.map(e => e.id.slice(6))"))
    assert {"agent_split", "agent_ttft_depth"} <= shown
    assert "Agent tasks" in page.locator("nav").inner_text()
    for panel in ("agent_split", "agent_ttft_depth"):
        assert _drawn(page, panel), panel
    split = _hover_value(page, "agent_split")
    assert re.search(r"s[0-9]+", split) and re.search(r"[0-9.]+ / [0-9.]+ / [0-9.]+ s", split)
    assert re.search(r"[0-9.]+ ms", _hover_value(page, "agent_ttft_depth"))
    shot = _artifact(tmp_path, "agents.png")
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert fetched == [] and errors == []
    page.context.close()
