"""The synthetic agent source, and tool time in the tool-calling datasets.

Plans are checked as plans (seeded, lazy, tool calls answered, children placed where they
are joined, compaction); then real runs against the simulator over HTTP check that each API
plays the trees as planned, from events.db alone: sub-agents in parallel while their parent
waits, the plan's tool latencies in `requests.tool_wait_ns`, load counted in agents, the
in-flight cap across a tree.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cli_options import turnbench
from conftest import SimProcess, start_sim
from graph import check_dependencies
from runs import RunResult, assert_one_in_flight, peak_concurrency, request_intervals
from turnbench.config import RunConfig
from turnbench.config_load import load_config
from turnbench.errors import InputError
from turnbench.run import execute
from turnbench.tokens.template import count_tokens
from turnbench.workload.config import SyntheticAgentWorkload
from turnbench.workload.conversation import Conversation, Turn, walk
from turnbench.workload.dataset import load_dataset
from turnbench.workload.messages import to_record
from turnbench.workload.synthetic_agent import SUMMARIZE, TASK_TOOL, synthetic_agents

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NS = 1_000_000_000

SMALL: dict[str, Any] = {
    "type": "synthetic_agent",
    "agents": 2,
    "system_prompt_tokens": 60,
    "tools": {"count": 3, "tokens": 12},
    "task_tokens": 20,
    "steps": 3,
    "parallel_tools": {"dist": "uniform", "min": 1, "max": 3},
    "tool_call_tokens": 4,
    "tool_result_tokens": {"dist": "uniform", "min": 10, "max": 40},
    "tool_latency_s": {"dist": "uniform", "min": 0.01, "max": 0.08},
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


def agents(overrides: dict[str, Any] | None = None, seed: int = 7) -> list[Conversation]:
    cfg = SyntheticAgentWorkload.model_validate({**SMALL, **(overrides or {})})
    return list(synthetic_agents(cfg, seed))


def sub(**options: Any) -> dict[str, Any]:
    return {"subagents": {**SMALL["subagents"], **options}}


# --- plans ---------------------------------------------------------------------------------


def test_same_seed_same_plans_and_agent_i_stands_alone() -> None:
    assert agents() == agents()
    assert agents() != agents(seed=8)
    five = agents({"agents": 5})
    assert five[:2] == agents()  # agent i depends on (seed, i) alone
    endless = synthetic_agents(SyntheticAgentWorkload.model_validate({**SMALL, "agents": None}), 7)
    assert [p.id for p in itertools.islice(endless, 7)] == [f"agent-{i}" for i in range(7)]


def _answered(plan: Conversation) -> None:
    """Every recorded tool call is answered by the next turn's tool messages, in order."""
    for turn, nxt in itertools.pairwise(plan.turns):
        if turn.reply is None:
            continue
        ids = [c["id"] for c in turn.reply["tool_calls"]]
        answers = [m for m in nxt.messages if m["role"] == "tool"]
        assert [m["tool_call_id"] for m in answers] == ids
        assert nxt.tool_time_s is not None and nxt.think_time_s is None
    assert plan.turns[-1].reply is None  # the final answer is the server's


def test_tool_loops_parallel_calls_and_sizes() -> None:
    plans = agents({"agents": 4, "parallel_tools": 3, "tool_result_tokens": 37, "subagents": {}})
    for plan in plans:
        assert not plan.children
        assert len(plan.turns) == 3 + 1  # the task, then one turn per step's results
        assert plan.turns[0].input_tokens == 20 and not plan.turns[0].messages
        _answered(plan)
        for turn in plan.turns[1:]:
            assert len(turn.messages) == 3  # three calls at once, answered together
            assert {count_tokens(m["content"]) for m in turn.messages} == {37}
            assert turn.tool_time_s is not None and 0.01 <= turn.tool_time_s <= 0.08
        names = {
            c["function"]["name"] for t in plan.turns if t.reply for c in t.reply["tool_calls"]
        }
        assert names <= {"tool_1", "tool_2", "tool_3"}
    # one system prompt and one catalogue, byte for byte, for every agent
    assert len({p.system for p in plans}) == 1 and count_tokens(plans[0].system or "") == 60
    assert len({json.dumps(p.tools) for p in plans}) == 1
    assert plans[0].tools and len(plans[0].tools) == 3  # no `task` tool without sub-agents


def test_subagent_tree_is_placed_where_it_is_joined() -> None:
    for plan in agents():
        tree = list(walk(plan))
        assert max(d for _, d in tree) == 2 and len(tree) == 1 + 2 + 4
        ids = [c["id"] for s, _ in tree for t in s.turns if t.reply for c in t.reply["tool_calls"]]
        assert len(ids) == len(set(ids))  # call ids are unique in the tree
        for session, depth in tree:
            _answered(session)
            if depth == 2:
                assert not session.children
                continue
            assert [c.after_turn for c in session.children] == [0, 0]  # after step 1
            spawn = session.turns[0].reply
            assert spawn is not None
            assert [c["function"]["name"] for c in spawn["tool_calls"]] == [TASK_TOOL] * 2
            for child in session.children:
                assert child.join_turn == 1 and not child.fork
                assert session.turns[1].tool_time_s == 0.0  # the answers came with the children
                assert child.plan.system != session.system or depth == 1
                assert child.plan.turns[0].input_tokens == 15


def test_forks_answer_their_parents_calls() -> None:
    for plan in agents(sub(fork=True, depth=1)):
        assert len(plan.children) == 2
        calls = plan.turns[0].reply["tool_calls"]  # type: ignore[index]
        for n, child in enumerate(plan.children, 1):
            assert child.fork and child.plan.system is None
            first = child.plan.turns[0]
            assert [m["tool_call_id"] for m in first.messages] == [c["id"] for c in calls]
            assert first.messages[n - 1]["content"].startswith(f"branch_{n} ")
            _answered(child.plan)


def test_background_children_are_not_joined() -> None:
    for plan in agents(sub(join="background", depth=1)):
        assert [c.join_turn for c in plan.children] == [None, None]
        assert all(m["content"] == "Started in the background." for m in plan.turns[1].messages)


def test_compaction_asks_for_a_summary_then_replaces_the_history() -> None:
    cfg = {
        "subagents": {},
        "steps": 8,
        "parallel_tools": 1,
        "tool_result_tokens": 100,
        "compact_above_tokens": 400,
        "compact_to_tokens": 50,
    }
    for plan in agents(cfg):
        turns = plan.turns
        asks = [
            i for i, t in enumerate(turns) if t.messages and t.messages[-1]["content"] == SUMMARIZE
        ]
        assert asks, "no compaction in a context that grows past the limit"
        for i in asks:
            ask, summary = turns[i], turns[i + 1]
            assert ask.max_tokens == 50 and ask.reply is None and ask.tool_time_s is not None
            assert summary.compact and summary.think_time_s == 0.0
            assert [m["role"] for m in summary.messages] == ["user"]
            assert count_tokens(summary.messages[0]["content"]) == 50
        # after each compaction the planned context starts small again: the next one is
        # several steps later, not at every turn
        assert all(b - a >= 3 for a, b in itertools.pairwise(asks))
        # every call is still answered once its reply is replayed after a compaction
        for turn, nxt in itertools.pairwise(turns):
            if turn.reply is not None:
                assert [m["tool_call_id"] for m in nxt.messages if m["role"] == "tool"] == [
                    c["id"] for c in turn.reply["tool_calls"]
                ]


def test_cycled_copies_are_rebuilt_and_salted() -> None:
    plans = list(
        itertools.islice(
            synthetic_agents(
                SyntheticAgentWorkload.model_validate({**SMALL, "cycle": True, "salt": True}), 7
            ),
            5,
        )
    )
    assert [p.id for p in plans] == ["agent-0", "agent-1", "agent-0#1", "agent-1#1", "agent-0#2"]
    first, copy = plans[0], plans[2]
    assert copy.system != first.system and copy.system.endswith(first.system or "")  # type: ignore[union-attr]
    assert copy.turns == first.turns
    assert [c.plan.turns for c in copy.children] == [c.plan.turns for c in first.children]
    assert [c.plan.id for c in copy.children] == ["agent-0.1#1", "agent-0.2#1"]
    # each copy's sub-agents are salted too, so copies never share a cached prefix
    assert not {c.plan.system for c in copy.children} & {c.plan.system for c in first.children}


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("workload:\n  type: synthetic_agent\n  stepz: 3\n")
    with pytest.raises(InputError) as err:
        load_config(path)
    assert err.value.field == "workload.stepz" and err.value.line == 3
    path.write_text("workload:\n  type: synthetic_agent\n  subagents: {depth: 9}\n")
    with pytest.raises(InputError) as err:
        load_config(path)
    assert err.value.field == "workload.subagents.depth"


def test_bad_agent_flag_is_one_line(tmp_path: Path, fast_sim: SimProcess) -> None:
    proc = turnbench("run", "--agent", "3:x", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: --agent expects STEPS[:FAN_OUT[:DEPTH]]")
    # an API that cannot send tools is refused before anything is written
    args = ("--target", fast_sim.url, "--api", "completions", "--out", "o")
    proc = turnbench("run", "--agent", "2", *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "synthetic agents call tools" in proc.stderr
    assert not (tmp_path / "o").exists()


# --- tool time in the tool-calling datasets -----------------------------------------------


def _call(i: int) -> dict[str, Any]:
    return {"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_a_tool_turns_delay_is_tool_time(tmp_path: Path) -> None:
    record = {
        "id": "t",
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [_call(1), _call(2)]},
            {"role": "tool", "tool_call_id": "c1", "content": "a", "delay_seconds": 0.2},
            {"role": "tool", "tool_call_id": "c2", "content": "b", "delay_seconds": 0.7},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "thanks", "delay_seconds": 1.5},
        ],
    }
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (plan,) = load_dataset(path).conversations
    tools, user = plan.turns[1], plan.turns[2]
    # parallel calls answered at once: the turn waits for the slowest
    assert (tools.tool_time_s, tools.think_time_s) == (0.7, None)
    assert (user.tool_time_s, user.think_time_s) == (None, 1.5)
    back = tmp_path / "back.jsonl"
    back.write_text(json.dumps(to_record(plan)) + "\n")
    assert load_dataset(back).conversations[0].turns == plan.turns  # a round trip keeps it


@pytest.fixture(scope="module")
def agent_sim() -> Iterator[SimProcess]:
    """The simulator with its modelled delays: requests take long enough to overlap."""
    sim = start_sim()
    yield sim
    sim.stop()


def run(tmp_path: Path, sim: SimProcess, workload: dict[str, Any], **cfg: Any) -> RunResult:
    config = {
        "name": "agent",
        "seed": 7,
        "target": {"url": sim.v1, **cfg.pop("target", {})},
        "workload": workload,
        "load": cfg.pop("load", {"mode": "parallel", "sessions": 2}),
        **cfg,
    }
    path = execute(
        RunConfig.model_validate(config),
        base_dir=tmp_path,
        out=tmp_path / "runs",
        console=Console(file=io.StringIO(), width=160),
        live=False,
        html=False,
    )
    return RunResult(path, "")


def test_tool_rows_wait_their_tool_time(tmp_path: Path, fast_sim: SimProcess) -> None:
    """The MLCommons rows: each tool row's delay is waited as tool time, in events.db, even
    where dataset think times are replaced."""
    name = "endpoints_rows_parallel_tools_sample.jsonl"
    rows = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
    result = run(
        tmp_path,
        fast_sim,
        {"type": "dataset", "path": str(DATA / name)},
        load={"mode": "parallel", "sessions": 1},
        session={"max_tokens": 4, "dataset_think_time": False},
    )
    delays = [r["delay_seconds"] for r in rows if r["role"] == "tool"]
    waits = [r["tool_wait_ns"] for r in result.attempts if r["turn_index"] > 1]
    assert waits == [int(d * NS) for d in delays]
    (session,) = result.sessions
    assert session["tool_wait_ns"] == sum(waits)


def _plan_turns(plans: list[Conversation]) -> dict[str, tuple[Turn, ...]]:
    return {s.id: s.turns for p in plans for s, _ in walk(p)}


@pytest.mark.parametrize(
    ("api", "fork"),
    [("chat", False), ("anthropic", False), ("responses", False), ("chat", True),
     ("anthropic", True), ("responses", True)],
)  # fmt: skip
def test_agent_trees_play_as_planned(
    tmp_path: Path, agent_sim: SimProcess, api: str, fork: bool
) -> None:
    workload = {**SMALL, **sub(fork=fork)}
    result = run(tmp_path, agent_sim, workload, target={"api": api})
    attempts, sessions = result.attempts, result.sessions
    assert all(r["status"] == "ok" for r in attempts), [r["error_message"] for r in attempts]
    plans = agents(sub(fork=fork))
    assert len(sessions) == sum(1 for p in plans for _ in walk(p))
    assert {s["depth"] for s in sessions} == {0, 1, 2}
    assert {s["kind"] for s in sessions if s["depth"]} == {"fork" if fork else "subagent"}
    assert all(s["outcome"] == "completed" for s in sessions)
    assert check_dependencies(sessions, attempts) > len(sessions)
    assert_one_in_flight(result)

    turns = _plan_turns(plans)
    for r in attempts:  # the waits are the plan's draws
        planned = turns[r["conversation_id"]][r["turn_index"] - 1].tool_time_s
        assert r["tool_wait_ns"] == (int(planned * NS) if planned else 0)
    assert sum(r["tool_wait_ns"] for r in attempts) > 0

    by_session = result.by_session()
    for parent in (s for s in sessions if s["children"]):
        kids = [s for s in sessions if s["parent_session_id"] == parent["session_id"]]
        # siblings run in parallel: their requests are in flight at the same time
        rows = [r for k in kids for r in by_session[k["session_id"]]]
        assert peak_concurrency(request_intervals(rows)) >= 2
        # the parent waits: its joining turn starts after its children's last request
        (join,) = {k["join_turn"] for k in kids}
        joining = [r for r in by_session[parent["session_id"]] if r["turn_index"] == join]
        assert joining and min(r["t_sent_ns"] for r in joining) >= max(r["t_end_ns"] for r in rows)


def test_users_count_agents_and_the_cap_holds_across_a_tree(
    tmp_path: Path, agent_sim: SimProcess
) -> None:
    workload = {**SMALL, "agents": 4, **sub(depth=1, fan_out=3)}
    users = run(tmp_path / "users", agent_sim, workload, load={"mode": "users", "users": 2})
    roots = [(s["t_start_ns"], s["t_end_ns"]) for s in users.sessions if s["depth"] == 0]
    assert len(roots) == 4 and peak_concurrency(roots) == 2  # two agents at a time
    everyone = [(s["t_start_ns"], s["t_end_ns"]) for s in users.sessions]
    assert peak_concurrency(everyone) > 2  # ... each with its sub-agents
    capped = run(
        tmp_path / "capped",
        agent_sim,
        workload,
        load={"mode": "parallel", "sessions": 4, "max_in_flight": 2},
    )
    rows = capped.attempts
    assert peak_concurrency(request_intervals(rows)) <= 2
    assert any(r["gate_wait_ns"] > 0 for r in rows)  # the cap held requests back
    assert check_dependencies(capped.sessions, rows) > 0
