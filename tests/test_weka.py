"""WEKA / AgentX agent traces: the plans the loader makes of `../shared/data/weka/` (text from
the hash ids, sub-agents placed by the README's rule, the three timings), `dataset inspect`
on a trace and the folder, and one-line errors for bad traces. Their replay against the
simulator is in test_weka_replay.py.

Expected values are computed here from the trace files, never copied from a run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from turnbench.errors import InputError
from turnbench.workload.cli import dataset_app
from turnbench.workload.config import DatasetOptions, WekaOptions
from turnbench.workload.conversation import Conversation, walk
from turnbench.workload.cycling import cycled
from turnbench.workload.dataset import load_dataset

DATA = Path(__file__).parent.parent.parent / "shared" / "data" / "weka"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared WEKA traces not present")
TRACES = sorted(DATA.glob("*.json"))


def raw(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def calls(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if r["type"] != "subagent"]


def markers(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if r["type"] == "subagent"]


def plans_of(path: Path, **weka: Any) -> list[Conversation]:
    options = DatasetOptions(weka=WekaOptions(**weka))
    return list(load_dataset(path, "auto", options).conversations)


def common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# --- plans -------------------------------------------------------------------------------


def test_the_folder_is_its_four_traces_each_one_agent_task() -> None:
    load = load_dataset(DATA)
    assert load.format == "weka" and load.report.records == len(TRACES) == 4
    for plan, file in zip(load.conversations, TRACES, strict=True):
        trace = json.loads(file.read_text())
        assert plan.id == trace["id"]
        assert len(plan.turns) == len(calls(trace["requests"]))
        subs = markers(trace["requests"])
        assert [len(c.plan.turns) for c in plan.children] == [
            len(calls(m["requests"])) for m in subs
        ]
        assert plan.metadata["models"] == [r["model"] for r in calls(trace["requests"])]
        assert [t.max_tokens for t in plan.turns] == [r["out"] for r in calls(trace["requests"])]


def test_sub_agents_follow_the_last_parent_request_before_them_and_join_by_their_end() -> None:
    for file in TRACES:
        trace = json.loads(file.read_text())
        [plan] = plans_of(file)
        parent = calls(trace["requests"])
        for child, m in zip(plan.children, markers(trace["requests"]), strict=True):
            after = max(k for k, r in enumerate(parent) if r["t"] <= m["t"])
            end = m["t"] + m["duration_ms"] / 1000
            joins = [k for k, r in enumerate(parent) if k > after and r["t"] >= end]
            assert child.after_turn == after
            assert child.join_turn == (joins[0] if joins else None)
    [plan] = plans_of(DATA / "trace_0277.json")
    assert any(c.join_turn is None for c in plan.children)  # a background sub-agent


def test_equal_leading_hash_ids_give_equal_leading_text() -> None:
    """Sub-agents of one trace share their first ids (system, tools, first context): their
    first prompts are byte-identical exactly that far, one word a token for the simulator."""
    trace = raw("trace_0277.json")
    [plan] = plans_of(DATA / "trace_0277.json")
    subs = markers(trace["requests"])
    words = []
    for child in plan.children:
        first = child.plan.turns[0].messages[0]["content"]
        words.append(f"{child.plan.system} {first}".split(" "))
    for i in range(1, len(subs)):
        a, b = subs[0]["requests"][0], subs[i]["requests"][0]
        shared = common(a["hash_ids"], b["hash_ids"])
        assert shared > 0
        same = common(words[0], words[i])
        assert 64 * shared <= same < 64 * (shared + 1)
    # a later call extends the earlier ones: its text starts with its first new block's id
    parent = calls(trace["requests"])
    for k in range(1, len(parent)):
        prev, ids = parent[k - 1]["hash_ids"], parent[k]["hash_ids"]
        if common(prev, ids) >= len(prev) - 1 and len(ids) > len(prev):
            text = plan.turns[k].messages[0]["content"]
            assert (text + " ").startswith(f"h{ids[len(prev)]} ")


def test_a_sub_agent_of_a_sub_agent_is_a_grandchild(tmp_path: Path) -> None:
    trace = raw("trace_0291.json")
    subs = markers(trace["requests"])
    inner = json.loads(json.dumps(subs[1]))
    inner["t"] = subs[0]["requests"][1]["t"] + 0.5
    subs[0]["requests"].insert(2, inner)  # after the sub-agent's second call
    path = tmp_path / "nested.json"
    path.write_text(json.dumps(trace))
    [plan] = plans_of(path)
    depths = [d for _, d in walk(plan)]
    assert depths == [0, 1, 2, 1]
    grandchild = plan.children[0].plan.children[0]
    assert grandchild.after_turn == 1 and len(grandchild.plan.turns) == len(inner["requests"])


def test_sub_agent_times_from_the_traces_start_are_made_relative(tmp_path: Path) -> None:
    """AgentX traces count sub-agent call times from the root's start: the same plans."""
    trace = raw("trace_0291.json")
    for m in markers(trace["requests"]):
        for r in m["requests"]:
            r["t"] += m["t"]
    path = tmp_path / "absolute.json"
    path.write_text(json.dumps(trace))
    for timing in ("recorded", "think"):
        [shifted] = plans_of(path, timing=timing)
        [plan] = plans_of(DATA / "trace_0291.json", timing=timing)
        assert shifted.children == plan.children


def test_the_system_prompt_is_the_whole_blocks_of_the_system_and_tool_region() -> None:
    trace = raw("trace_0012.json")
    [plan] = plans_of(DATA / "trace_0012.json")
    blocks = (trace["system_tokens"] + trace["tool_tokens"]) // trace["block_size"]
    assert plan.system is not None
    assert len(plan.system.split(" ")) == blocks * trace["block_size"]
    assert plan.system.startswith(f"h{trace['requests'][0]['hash_ids'][0]} ")


def test_a_broken_prefix_is_a_compaction_sized_to_the_whole_context(tmp_path: Path) -> None:
    trace = raw("trace_0012.json")
    reqs = trace["requests"]
    third = reqs[2]
    n_ids = len(third["hash_ids"])
    # a compaction at the third request: new ids after the first 100, which later ones extend
    new = reqs[0]["hash_ids"][:100] + [90000 + i for i in range(n_ids - 100)]
    for r in reqs[3:]:
        r["hash_ids"] = new + r["hash_ids"][n_ids:]
    third["hash_ids"] = new
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(trace))
    load = load_dataset(path)
    [plan] = load.conversations
    assert [t.compact for t in plan.turns].count(True) == 1 and plan.turns[2].compact
    assert plan.system is not None
    n_sys = len(plan.system.split(" "))
    assert len(plan.turns[2].messages[0]["content"].split(" ")) == third["in"] - n_sys
    assert load.report.repaired["prefix changed: played as a compaction"] == 1


def test_think_timing_waits_the_recorded_think_or_tool_time_capped_and_scaled() -> None:
    trace = raw("trace_0012.json")
    [plan] = plans_of(DATA / "trace_0012.json", timing="think", max_idle_s=6.0, time_scale=0.5)
    for turn, r in zip(plan.turns[1:], trace["requests"][1:], strict=True):
        wait = min(r["think_time"], 6.0) * 0.5
        if "tool_result" in r["input_types"]:
            assert turn.tool_time_s == pytest.approx(wait) and turn.think_time_s is None
        else:
            assert turn.think_time_s == pytest.approx(wait) and turn.tool_time_s is None
        assert turn.at_s is None


def test_think_timing_starts_sub_agents_their_recorded_gap_after_the_call_they_follow() -> None:
    trace = raw("trace_0277.json")
    parent = calls(trace["requests"])
    [plan] = plans_of(DATA / "trace_0277.json", max_idle_s=None, time_scale=0.5)
    for child, m in zip(plan.children, markers(trace["requests"]), strict=True):
        after = parent[child.after_turn]
        gap = m["t"] - (after["t"] + after["api_time"])
        assert child.delay_s == pytest.approx(max(0.0, gap) * 0.5) and child.at_s is None
    # capped, siblings keep their order and spacing below the cap
    [capped] = plans_of(DATA / "trace_0277.json", max_idle_s=60.0)
    first = [c.delay_s for c in capped.children if c.after_turn == 0]
    assert first == sorted(first) and len(set(first)) == len(first)


def test_none_timing_is_back_to_back_and_recorded_timing_keeps_the_offsets() -> None:
    [plan] = plans_of(DATA / "trace_0291.json", timing="none")
    for session, _ in walk(plan):
        assert all((t.think_time_s or 0) == 0 and (t.tool_time_s or 0) == 0 for t in session.turns)
    assert all(c.delay_s == 0 and c.at_s is None for c in plan.children)
    trace = raw("trace_0291.json")
    [plan] = plans_of(DATA / "trace_0291.json", timing="recorded", max_idle_s=None)
    parent = calls(trace["requests"])
    assert [t.at_s for t in plan.turns[1:]] == pytest.approx([r["t"] for r in parent[1:]])
    assert [c.at_s for c in plan.children] == pytest.approx(
        [m["t"] for m in markers(trace["requests"])]
    )
    [capped] = plans_of(DATA / "trace_0291.json", timing="recorded", max_idle_s=30.0)
    offsets = [0.0] + [t.at_s or 0.0 for t in capped.turns[1:]]
    assert offsets == sorted(offsets)
    assert offsets[-1] < parent[-1]["t"]  # the long idle gaps are cut to 30 s


def test_cycled_copies_salt_their_sub_agents_too() -> None:
    [plan] = plans_of(DATA / "trace_0291.json")
    stream = cycled([plan], cycle=True, salt=True)
    first, second, third = next(stream), next(stream), next(stream)
    assert first is plan
    systems = []
    for copy in (second, third):
        for session, _ in walk(copy):
            assert session.id.endswith(f"#{1 if copy is second else 2}")
            assert session.system is not None
            systems.append(session.system.split(" ", 1)[0])
    # every session of every copy starts with a word of its own
    assert len(set(systems)) == len(systems) == 2 * (1 + len(plan.children))


def test_a_folder_reads_only_dataset_files_and_keeps_ids_distinct(tmp_path: Path) -> None:
    shutil.copy(DATA / "trace_0012.json", tmp_path / "a.json")
    shutil.copy(DATA / "trace_0012.json", tmp_path / "b.json")
    (tmp_path / "README.md").write_text("# not a dataset\n")
    plans = plans_of(tmp_path)
    assert [p.id for p in plans] == ["trace_0012", "b/trace_0012"]


def test_a_pretty_printed_trace_reads_as_the_compact_one(tmp_path: Path) -> None:
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps(raw("trace_0012.json"), indent=2))
    [pretty] = plans_of(path)
    [compact] = plans_of(DATA / "trace_0012.json")
    assert pretty.turns == compact.turns and pretty.system == compact.system


# --- bad traces --------------------------------------------------------------------------


def _bad(tmp_path: Path, edit: Any) -> str:
    trace = raw("trace_0277.json")
    edit(trace)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(trace))
    with pytest.raises(InputError) as err:
        load_dataset(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}:1 [")
    return message


def _set(trace: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    obj = trace
    for key in path[:-1]:
        obj = obj[key]
    if value is None:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


@pytest.mark.parametrize(
    ("path", "value", "field", "says"),
    [
        (("requests", 0, "type"), "x", "requests[0].type", "unknown request type 'x'"),
        (("requests", 0, "hash_ids"), None, "requests[0].hash_ids", "missing required field"),
        (("requests", 0, "hash_ids", 2), "3", "requests[0].hash_ids[2]", "expected an integer"),
        (
            ("requests", 1, "requests", 3, "hash_ids"),
            None,
            "requests[1].requests[3].hash_ids",
            "missing required field",
        ),
        (("requests", 1, "requests"), [], "requests[1].requests", "a sub-agent with no requests"),
        (("requests", 0, "in"), 100, "requests[0].in", "fewer than its 305 hash ids"),
        (("requests", 0, "out"), -1, "requests[0].out", "must be >= 0"),
        (("requests", 0, "t"), "soon", "requests[0].t", "expected a number"),
        (("block_size",), 0, "block_size", "must be >= 1"),
    ],
)
def test_a_bad_trace_is_one_line_naming_the_request_and_field(
    tmp_path: Path, path: tuple[Any, ...], value: Any, field: str, says: str
) -> None:
    message = _bad(tmp_path, lambda t: _set(t, path, value))
    assert f"[{field}]" in message and says in message


def test_a_sub_agent_before_any_parent_request_is_an_error(tmp_path: Path) -> None:
    def first_is_a_sub_agent(trace: dict[str, Any]) -> None:
        trace["requests"].insert(0, trace["requests"].pop(1))

    message = _bad(tmp_path, first_is_a_sub_agent)
    assert "[requests[0]]" in message and "no turn to follow" in message


def test_the_cli_says_a_bad_trace_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    trace = raw("trace_0012.json")
    trace["requests"][3]["type"] = "z"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(trace))
    proc = subprocess.run(
        [sys.executable, "-m", "turnbench", "dataset", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "[requests[3].type]" in line and "unknown request type 'z'" in line
    assert "Traceback" not in proc.stderr


def test_convert_refuses_an_agent_with_sub_agents(tmp_path: Path) -> None:
    src = DATA / "trace_0277.json"
    result = CliRunner().invoke(
        dataset_app, ["convert", "--from", "weka", str(src), str(tmp_path / "out.jsonl")]
    )
    assert result.exit_code == 2
    assert f"{src}: 'trace_0277' has sub-agents" in result.output


# --- dataset inspect ---------------------------------------------------------------------


def ideal_hit(trace: dict[str, Any]) -> float:
    """Share of input tokens in leading blocks an earlier call of the file already sent."""
    timed: list[tuple[float, dict[str, Any]]] = []

    def collect(requests: list[dict[str, Any]], start: float) -> None:
        for r in requests:
            if r["type"] == "subagent":
                collect(r["requests"], start + r["t"])
            else:
                timed.append((start + r["t"], r))

    collect(trace["requests"], 0.0)
    seen: set[int] = set()
    hit = total = 0
    for _, r in sorted(timed, key=lambda x: x[0]):
        n = 0
        while n < len(r["hash_ids"]) and r["hash_ids"][n] in seen:
            n += 1
        hit += min(n * trace["block_size"], r["in"])
        total += r["in"]
        seen.update(r["hash_ids"])
    return 100 * hit / total


def test_inspect_a_trace_prints_its_graph_statistics() -> None:
    trace = raw("trace_0274.json")
    result = CliRunner().invoke(dataset_app, ["inspect", str(DATA / "trace_0274.json")])
    assert result.exit_code == 0, result.output
    out = result.output
    n_calls = len(calls(trace["requests"])) + sum(
        len(m["requests"]) for m in markers(trace["requests"])
    )
    assert "agent tasks (session graphs)" in out
    row = next(line for line in out.splitlines() if "trace_0274" in line and "→" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    ins = [r["in"] for r in calls(trace["requests"])]
    assert cells[1:5] == [
        str(n_calls),
        str(len(markers(trace["requests"]))),
        "1",
        f"{ins[0]:,} → {max(ins):,}",
    ]
    assert cells[5] == f"{ideal_hit(trace):.1f}"


def test_inspect_the_folder_sums_its_traces() -> None:
    result = CliRunner().invoke(dataset_app, ["inspect", str(DATA)])
    assert result.exit_code == 0, result.output
    traces = [json.loads(f.read_text()) for f in TRACES]
    subs = sum(len(markers(t["requests"])) for t in traces)
    for t in traces:
        assert t["id"] in result.output
    line = next(x for x in result.output.splitlines() if "sub-agents (forks included)" in x)
    assert line.rstrip(" │").endswith(str(subs))
