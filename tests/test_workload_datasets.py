"""Every loader on the real sample files in ../shared/data, checked against raw counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from turnbench.tokens.template import count_tokens
from turnbench.workload.config import DatasetOptions, DatasetWorkload, ShareGPTOptions
from turnbench.workload.dataset import load_dataset
from turnbench.workload.messages import to_record
from turnbench.workload.sources import conversations

DATA = Path(__file__).parent.parent.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared sample data not present")


def jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def roles(conv) -> Counter[str]:  # type: ignore[no-untyped-def]
    c: Counter[str] = Counter()
    for t in conv.turns:
        c.update(m["role"] for m in t.messages)
        if t.reply is not None:
            c["assistant"] += 1
    return c


def test_sharegpt_sample_merges_split_parts() -> None:
    raw = json.loads((DATA / "sharegpt_sample.json").read_text())
    load = load_dataset(DATA / "sharegpt_sample.json")
    assert load.format == "sharegpt"
    ids = [c.id for c in load.conversations]
    assert ids == ["QWJhYvA_0", "i6IyJda_0", "A5AbcES_0", "hRPPgZT"]
    assert load.report.repaired == {"split parts merged": 1}
    merged = load.conversations[3]
    parts = [r for r in raw if r["id"].startswith("hRPPgZT_")]
    values = [
        m["value"]
        for r in sorted(parts, key=lambda r: int(r["id"][8:]))
        for m in r["conversations"]
    ]
    humans = sum(1 for r in parts for m in r["conversations"] if m["from"] == "human")
    assert len(merged.turns) == humans
    planned = [
        x
        for t in merged.turns
        for x in (t.messages[0]["content"], t.reply and t.reply["content"])
        if x
    ]
    assert planned == values
    for conv, rec in zip(load.conversations[:3], raw[:3], strict=True):
        assert len(conv.turns) == sum(m["from"] == "human" for m in rec["conversations"])


def test_sharegpt_toolcall_roles() -> None:
    raw = json.loads((DATA / "sharegpt_toolcall_sample.json").read_text())
    load = load_dataset(DATA / "sharegpt_toolcall_sample.json")
    assert len(load.conversations) == 50 == len(raw)
    total: Counter[str] = Counter()
    calls = 0
    for conv in load.conversations:
        total += roles(conv)
        calls += sum(1 for t in conv.turns if t.reply and t.reply.get("tool_calls"))
    raw_roles = Counter(m["from"] for r in raw for m in r["conversations"])
    assert total["user"] == raw_roles["human"] == 131
    assert total["tool"] == raw_roles["observation"] == 36
    assert calls == raw_roles["function_call"] == 36
    assert total["assistant"] == raw_roles["gpt"] + raw_roles["function_call"]
    with_tools = [c for c in load.conversations if c.tools]
    assert len(with_tools) == sum(1 for r in raw if json.loads(r["tools"]))
    assert with_tools[0].tools[0]["type"] == "function"  # type: ignore[index]


def test_sharegpt_filters_truncate_and_drop() -> None:
    opts = DatasetOptions(sharegpt=ShareGPTOptions(min_turns=3, max_turns=4, max_chars=6000))
    load = load_dataset(DATA / "sharegpt_sample.json", "sharegpt", opts)
    assert all(3 <= len(c.turns) <= 4 for c in load.conversations)
    assert sum(load.report.dropped.values()) + len(load.conversations) == 4


def test_messages_tau_bench_trajectories() -> None:
    raw = json.loads((DATA / "tool_calls_sample.json").read_text())
    opts = DatasetOptions(messages={"messages_key": "traj"})  # type: ignore[arg-type]
    load = load_dataset(DATA / "tool_calls_sample.json", "auto", opts)
    assert load.format == "messages" and len(load.conversations) == 8
    total: Counter[str] = Counter()
    for conv, rec in zip(load.conversations, raw, strict=True):
        assert conv.system == rec["traj"][0]["content"]
        total += roles(conv)
    assert total == {"user": 58, "tool": 58, "assistant": 108}
    assert sum(len(c.turns) for c in load.conversations) == 58 + 58


def test_rows_samples() -> None:
    for name, n_conv in [
        ("endpoints_rows_sample.jsonl", 2),
        ("endpoints_rows_parallel_tools_sample.jsonl", 1),
        ("endpoints_rows_customer_support.jsonl", 3),
    ]:
        raw = jsonl(name)
        load = load_dataset(DATA / name)
        assert load.format == "rows" and len(load.conversations) == n_conv
        by_id = Counter(r["conversation_id"] for r in raw)
        for conv in load.conversations:
            rows = [r for r in raw if r["conversation_id"] == conv.id]
            assert len(conv.turns) == sum(r["role"] in ("user", "tool") for r in rows)
            assert roles(conv)["tool"] == sum(len(r.get("tool_results", [])) for r in rows)
            assert roles(conv)["assistant"] == sum(r["role"] == "assistant" for r in rows)
            assert conv.system == rows[0].get("system")
            delays = [r["delay_seconds"] for r in rows if "delay_seconds" in r]
            tool_delays = [r["delay_seconds"] for r in rows if r["role"] == "tool"]
            # a tool row's delay is the tool's execution time: the turn's tool time
            tool_turns = [t for t in conv.turns if t.messages[0]["role"] == "tool"]
            assert [t.tool_time_s for t in tool_turns] == tool_delays
            assert all(t.think_time_s is None for t in tool_turns)
            waits = [t.think_time_s if t.tool_time_s is None else t.tool_time_s for t in conv.turns]
            assert [w for w in waits if w is not None] == delays
        assert sorted(by_id) == sorted(c.id for c in load.conversations)
    par = load_dataset(DATA / "endpoints_rows_parallel_tools_sample.jsonl").conversations[0]
    assert max(len(t.messages) for t in par.turns) == 2


def test_aiperf_multi_turn() -> None:
    raw = jsonl("aiperf_multi_turn_sample.jsonl")
    load = load_dataset(DATA / "aiperf_multi_turn_sample.jsonl")
    assert load.format == "aiperf" and len(load.conversations) == 20
    for conv, rec in zip(load.conversations, raw, strict=True):
        assert conv.id == rec["session_id"]
        assert [t.messages[0]["content"] for t in conv.turns] == [t["text"] for t in rec["turns"]]


def test_mooncake_trace_blocks_are_shared_exactly() -> None:
    raw = jsonl("mooncake_conversation_trace_head.jsonl")
    load = load_dataset(DATA / "mooncake_conversation_trace_head.jsonl")
    assert load.format == "trace" and len(load.conversations) == 400
    convs = list(load.conversations)
    for conv, rec in zip(convs[:60], raw[:60], strict=True):
        assert conv.start_s == rec["timestamp"] / 1000
        (turn,) = conv.turns
        assert turn.max_tokens == rec["output_length"]
        assert count_tokens(turn.messages[0]["content"]) == rec["input_length"]
    a, b, c = (convs[i].turns[0].messages[0]["content"].split(" ") for i in range(3))
    # requests 0..2 share hash id 0 only: the first 512 tokens are equal, the next differ
    assert raw[0]["hash_ids"][0] == raw[1]["hash_ids"][0] == raw[2]["hash_ids"][0]
    assert a[:512] == b[:512] == c[:512]
    assert a[512:1024] != b[512:1024] and b[512:1024] != c[512:1024]


def test_trace_time_scale_and_block_size() -> None:
    opts = DatasetOptions(trace={"block_size": 16, "time_scale": 0.5})  # type: ignore[arg-type]
    raw = jsonl("mooncake_synthetic_trace_head.jsonl")
    load = load_dataset(DATA / "mooncake_synthetic_trace_head.jsonl", "trace", opts)
    last = load.conversations[399]
    assert last.start_s == raw[399]["timestamp"] / 1000 * 0.5
    assert count_tokens(last.turns[0].messages[0]["content"]) == raw[399]["input_length"]


def test_aiperf_mooncake_sessions() -> None:
    raw = jsonl("aiperf_mooncake_sessions_sample.jsonl")
    load = load_dataset(DATA / "aiperf_mooncake_sessions_sample.jsonl")
    sessions = list(dict.fromkeys(r["session_id"] for r in raw))
    assert [c.id for c in load.conversations] == [f"session-{s}" for s in sessions]
    assert sum(len(c.turns) for c in load.conversations) == 73
    first = load.conversations[0]
    rows = [r for r in raw if r["session_id"] == sessions[0]]
    assert first.start_s == 0.0 and first.group == str(rows[0]["group_id"])
    assert [t.think_time_s for t in first.turns[1:]] == [r["delay"] / 1000 for r in rows[1:]]
    assert [count_tokens(t.messages[0]["content"]) for t in first.turns] == [
        r["input_length"] for r in rows
    ]
    # ids 0-62 are shared by every session: the same leading text in every first turn
    heads = {c.turns[0].messages[0]["content"][:2000] for c in load.conversations}
    assert len(heads) == 1


def test_conversations_resolves_relative_path_and_cycles() -> None:
    cfg = DatasetWorkload(path=Path("aiperf_multi_turn_sample.jsonl"), cycle=True, salt=True)
    it = conversations(cfg, seed=0, base_dir=DATA)
    plans = [next(it) for _ in range(21)]
    assert plans[20].id == "chat_01#1"
    first = plans[20].turns[0].messages[0]["content"]
    assert (
        first.endswith(plans[0].turns[0].messages[0]["content"])
        and first != plans[0].turns[0].messages[0]["content"]
    )


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("sharegpt_toolcall_sample.json", "sharegpt"),
        ("endpoints_rows_sample.jsonl", "rows"),
        ("aiperf_mooncake_sessions_sample.jsonl", "trace"),
        ("tool_calls_sample.json", "messages"),
        ("aiperf_multi_turn_sample.jsonl", "aiperf"),
    ],
)
def test_canonical_round_trip(tmp_path: Path, name: str, fmt: str) -> None:
    opts = DatasetOptions(messages={"messages_key": "traj"})  # type: ignore[arg-type]
    load = load_dataset(DATA / name, fmt, opts)  # type: ignore[arg-type]
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(to_record(c)) + "\n" for c in load.conversations))
    back = load_dataset(out, "auto")
    assert back.format == "messages"
    assert list(back.conversations) == list(load.conversations)
