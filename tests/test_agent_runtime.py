"""The agent runtime on hand-built session graphs: sub-agents, forks, joins, background
children, tool time and compaction, played by a real worker against the simulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from conftest import start_sim
from graph import check_dependencies
from turnbench.config import RunConfig
from turnbench.engine.worker import Batch, SessionStart, WorkerCore, WorkerSpec
from turnbench.record.recorder import Rows
from turnbench.workload.conversation import Child, Conversation, Turn

NS = 1_000_000_000


def _turns(n: int, tool_s: float | None = None) -> tuple[Turn, ...]:
    return tuple(
        Turn(input_tokens=16, max_tokens=8, tool_time_s=tool_s if i else None) for i in range(n)
    )


def _agent() -> Conversation:
    grandchild = Conversation("gc", _turns(2))
    sub = Conversation(
        "sub",
        _turns(3, tool_s=0.05),
        system="you are a sub-agent",
        children=(Child(grandchild, after_turn=0, join_turn=2),),
    )
    fork = Conversation("fork", _turns(2))
    background = Conversation("bg", _turns(4, tool_s=0.05))
    return Conversation(
        "root",
        (*_turns(2), Turn(input_tokens=16, max_tokens=8, compact=True), *_turns(1)),
        system="you are the agent",
        children=(
            Child(sub, after_turn=0, join_turn=2),
            Child(sub, after_turn=0, delay_s=0.02, join_turn=2),
            Child(fork, after_turn=1, fork=True, join_turn=3),
            Child(background, after_turn=-1),
        ),
    )


async def _play(
    plans: list[Conversation],
    config: dict[str, Any],
    sim_args: tuple[str, ...] = (),
    stop_after_s: float | None = None,
) -> Batch[Rows]:
    """Play `plans` on one worker against a fresh simulator; `stop_after_s`: end the run
    that long after the start (its end policy decides what the sessions do)."""
    sim = start_sim("--model", "sim", *sim_args)
    try:
        cfg = RunConfig.model_validate(
            {
                "target": {"url": sim.v1, "model": "sim"},
                "workload": {"type": "synthetic", "conversations": 1},
                **config,
            }
        )
        spec = WorkerSpec(0, cfg.model_dump(mode="json"), sim.v1, "sim", None, None, None, {})
        core = WorkerCore(spec)
        await core.open()
        core.begin(time.time_ns())
        now = core.clock()
        for i, plan in enumerate(plans):
            core.start(SessionStart(i, plan, now, 0))
        if stop_after_s is not None:
            await asyncio.sleep(stop_after_s)
            core.stop()
        while core.active:
            await asyncio.sleep(0.02)
        payload = core.take_batch()
        await core.close()
    finally:
        sim.stop()
    assert payload is not None
    return msgspec.msgpack.decode(payload, type=Batch[Rows])


def _dicts(rows: list[Any]) -> list[dict[str, Any]]:
    return [msgspec.structs.asdict(r) for r in rows]


def test_a_tree_plays_with_parallel_children_and_waiting_parents() -> None:
    batch = asyncio.run(_play([_agent()], {}))
    sessions, attempts = _dicts(batch.rows.sessions), _dicts(batch.rows.attempts)
    by_id = {s["session_id"]: s for s in sessions}
    assert set(by_id) == {"s0", "s0.1", "s0.2", "s0.3", "s0.4", "s0.1.1", "s0.2.1"}
    assert all(s["outcome"] == "completed" and s["task_id"] == "s0" for s in sessions)
    assert {a["task_id"] for a in attempts} == {"s0"}
    assert by_id["s0"]["children"] == 4 and by_id["s0"]["parent_session_id"] is None
    kinds = [by_id[k]["kind"] for k in ("s0.1", "s0.3", "s0.1.1")]
    assert kinds == ["subagent", "fork", "subagent"]
    assert by_id["s0.1.1"]["depth"] == 2 and by_id["s0.1.1"]["parent_session_id"] == "s0.1"
    assert by_id["s0.4"]["join_turn"] is None and by_id["s0.4"]["after_turn"] == 0
    assert by_id["s0.1"]["after_turn"] == 1 and by_id["s0.1"]["join_turn"] == 3
    assert check_dependencies(sessions, attempts) >= 15
    # the two sub-agents ran at the same time: their requests overlap
    spans = {
        sid: (
            min(a["t_sent_ns"] for a in attempts if a["session_id"] == sid),
            max(a["t_end_ns"] for a in attempts if a["session_id"] == sid),
        )
        for sid in ("s0.1", "s0.2")
    }
    assert spans["s0.2"][0] < spans["s0.1"][1] and spans["s0.1"][0] < spans["s0.2"][1]
    # the root's row is written after its whole tree ended
    assert by_id["s0"]["t_end_ns"] >= max(s["t_end_ns"] for s in sessions)
    # tool time: recorded on each later turn of the sub-agents, never on the root's turns
    sub_waits = [a["tool_wait_ns"] for a in attempts if a["session_id"] == "s0.1"]
    assert sorted(sub_waits) == [0, 50_000_000, 50_000_000]
    assert by_id["s0.1"]["tool_wait_ns"] == 100_000_000
    assert all(a["tool_wait_ns"] == 0 for a in attempts if a["session_id"] == "s0")


def test_a_fork_starts_from_its_parents_history_and_compaction_drops_it() -> None:
    batch = asyncio.run(_play([_agent()], {}))
    attempts = _dicts(batch.rows.attempts)

    def turn(sid: str, n: int) -> dict[str, Any]:
        return next(a for a in attempts if a["session_id"] == sid and a["turn_index"] == n)

    root2 = turn("s0", 2)
    fork1 = turn("s0.3", 1)
    # the fork's first request carries the root's history after turn 2: 5 messages + its own
    assert fork1["context_messages"] == root2["context_messages"] + 2
    assert fork1["prompt_tokens"] > turn("s0.4", 1)["prompt_tokens"]
    # compaction: turn 3 of the root sends only the system prompt and its own message
    assert turn("s0", 3)["context_messages"] == 2
    assert turn("s0", 3)["dropped_messages"] == 4


def test_the_end_of_the_run_cuts_a_whole_tree() -> None:
    slow = Conversation(
        "slow",
        _turns(2),
        children=(Child(Conversation("c", _turns(50, tool_s=0.2)), after_turn=0, join_turn=1),),
    )

    config = {"load": {"end": "cut"}}
    batch = asyncio.run(_play([slow], config, ("--zero-delay",), stop_after_s=0.5))
    by_id = {s.session_id: s for s in batch.rows.sessions}
    assert by_id["s0.1"].outcome == "unfinished" and by_id["s0"].outcome == "unfinished"
    assert by_id["s0"].t_end_ns >= by_id["s0.1"].t_end_ns
    assert 1 <= by_id["s0.1"].turns_ok < 50


@pytest.mark.parametrize("api", ["anthropic", "responses"])
def test_trees_play_over_the_apis_agents_speak(api: str) -> None:
    batch = asyncio.run(_play([_agent(), _agent()], {"target": {"api": api}}))
    attempts = _dicts(batch.rows.attempts)
    assert all(a["status"] == "ok" for a in attempts)
    assert {a["task_id"] for a in attempts} == {"s0", "s1"}
    assert check_dependencies(_dicts(batch.rows.sessions), attempts) >= 30
