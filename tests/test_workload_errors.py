"""Bad input: every loader names file, line and field, and never raises anything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnbench.errors import InputError
from turnbench.workload.config import DatasetOptions, ShareGPTOptions
from turnbench.workload.dataset import load_dataset

FORMATS = ("auto", "sharegpt", "rows", "messages", "aiperf", "trace")


def write(tmp_path: Path, name: str, lines: list[object] | str) -> Path:
    path = tmp_path / name
    if isinstance(lines, str):
        path.write_text(lines)
    else:
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def error(path: Path, fmt: str = "auto", opts: DatasetOptions | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        load_dataset(path, fmt, opts)  # type: ignore[arg-type]
    return info.value


def user(text: str = "hi") -> dict[str, str]:
    return {"role": "user", "content": text}


def test_file_level_errors(tmp_path: Path) -> None:
    assert "cannot read" in str(error(tmp_path / "missing.jsonl"))
    assert "empty" in str(error(write(tmp_path, "e.jsonl", "\n  \n")))
    bad = tmp_path / "b.jsonl"
    bad.write_bytes(b'{"messages": []}\n{"x": "\xff"}\n')
    err = error(bad)
    assert err.line == 2 and "UTF-8" in err.message
    err = error(write(tmp_path, "j.jsonl", '[{"role":"user","content":"a"}]\n{"messages": [\n'))
    assert (err.file, err.line) == (str(tmp_path / "j.jsonl"), 2) and "bad JSON" in err.message
    err = error(write(tmp_path, "a.json", '[\n  {"conversations": []},\n  {"id": 1,,}\n]'))
    assert err.line == 3 and "record 1" in err.message
    err = error(write(tmp_path, "u.jsonl", [{"foo": 1}]))
    assert "unknown dataset format" in err.message and err.line == 1
    err = error(
        write(tmp_path, "amb.jsonl", [{"conversations": [], "session_id": "a", "turns": []}])
    )
    assert "ambiguous" in err.message


def test_messages_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "m.jsonl", [[user()], {"messages": [user(), {"role": "robot"}]}])
    err = error(p)
    assert (err.line, err.field) == (2, "messages[1].role")
    p = write(tmp_path, "m2.jsonl", [[{"role": "assistant", "content": "x"}]])
    assert "at least one user" in error(p, "messages").message
    p = write(tmp_path, "m3.jsonl", [[user(), {"role": "tool", "content": "x"}]])
    assert error(p, "messages").field == "[1].role"
    p = write(tmp_path, "m4.jsonl", [[{**user(), "delay_seconds": "soon"}]])
    assert error(p, "messages").field == "[0].delay_seconds"
    p = write(tmp_path, "m5.jsonl", [[{"role": "user", "content": 3}]])
    assert error(p, "messages").field == "[0].content"
    p = write(tmp_path, "m6.json", "[[" + json.dumps(user()) + "], 7]")
    err = error(p, "messages")
    assert err.line == 1 and "record 1" in err.message


def test_messages_turns_and_think_time(tmp_path: Path) -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "assistant", "content": "lead"},
        {**user("a"), "delay_seconds": 1.5, "max_tokens": 9},
        call,
        {"role": "tool", "tool_call_id": "c1", "content": "r", "extra": 1},
        {"role": "assistant", "content": "done"},
        user("b"),
    ]
    load = load_dataset(write(tmp_path, "ok.jsonl", [{"id": "x", "messages": msgs}]))
    (conv,) = load.conversations
    assert conv.system == "sys" and len(conv.turns) == 3
    assert conv.turns[0].think_time_s == 1.5 and conv.turns[0].max_tokens == 9
    assert conv.turns[0].messages == (user("a"),) and conv.turns[0].reply == call
    assert conv.turns[1].messages == ({"role": "tool", "tool_call_id": "c1", "content": "r"},)
    assert conv.turns[2].reply is None
    assert load.report.repaired == {"leading assistant message dropped": 1}


def test_sharegpt_errors_and_repairs(tmp_path: Path) -> None:
    def conv(*turns: tuple[str, str], cid: str = "a") -> dict[str, object]:
        return {"id": cid, "conversations": [{"from": f, "value": v} for f, v in turns]}

    p = write(
        tmp_path,
        "s.jsonl",
        [conv(("human", "a")), {"id": "b", "conversations": [{"from": "human"}]}],
    )
    assert (error(p).line, error(p).field) == (2, "conversations[0].value")
    p = write(tmp_path, "s2.jsonl", [conv(("alien", "a"))])
    assert error(p).field == "conversations[0].from"
    p = write(tmp_path, "s3.jsonl", [conv(("human", "a"), ("function_call", "nope"))])
    assert error(p).field == "conversations[1].value"
    data = [
        conv(
            ("gpt", "hello"),
            ("human", "q1"),
            ("human", "q1b"),
            ("gpt", "a1"),
            ("gpt", "a1b"),
            ("human", "q2"),
            cid="m",
        ),
        conv(("human", "x"), ("gpt", "y"), cid="ok"),
    ]
    p = write(tmp_path, "s4.jsonl", data)
    merged = load_dataset(p, "sharegpt")
    m = merged.conversations[0]
    assert [t.messages[0]["content"] for t in m.turns] == ["q1\n\nq1b", "q2"]
    assert m.turns[0].reply == {"role": "assistant", "content": "a1\n\na1b"}
    assert merged.report.repaired == {
        "leading assistant message dropped": 1,
        "consecutive user messages merged": 1,
        "consecutive assistant messages merged": 1,
    }
    dropped = load_dataset(
        p, "sharegpt", DatasetOptions(sharegpt=ShareGPTOptions(alternation="drop"))
    )
    assert [c.id for c in dropped.conversations] == ["ok"]
    assert dropped.report.dropped == {"broken user/assistant alternation": 1}
    p = write(tmp_path, "s5.jsonl", [conv(("gpt", "only"), cid="z")])
    assert "no conversations left" in error(p, "sharegpt").message


def test_rows_contiguity_and_order(tmp_path: Path) -> None:
    def row(cid: str, turn: int, role: str = "user", **kw: object) -> dict[str, object]:
        return {"conversation_id": cid, "turn": turn, "role": role, "content": "x", **kw}

    p = write(
        tmp_path, "r.jsonl", [row("a", 1), row("a", 2, "assistant"), row("b", 1), row("a", 3)]
    )
    err = error(p)
    assert (err.line, err.field) == (4, "conversation_id") and "line 1" in err.message
    p = write(tmp_path, "r2.jsonl", [row("a", 1), row("a", 3, "assistant"), row("a", 2)])
    err = error(p)
    assert (err.line, err.field) == (3, "turn")
    p = write(tmp_path, "r3.jsonl", [row("a", 1), row("a", 2, "tool", tool_results=[{}])])
    assert (error(p).line, error(p).field) == (2, "tool_results[0].tool_call_id")
    p = write(
        tmp_path,
        "r4.jsonl",
        [row("a", 1), row("a", 2, "tool", tool_results=[{"tool_call_id": "c", "content": "r"}])],
    )
    err = error(p, "rows")
    assert (err.line, err.field) == (2, "role") and "tool_calls" in err.message
    p = write(tmp_path, "r5.jsonl", [row("a", 1, delay_seconds=-1)])
    assert error(p, "rows").field == "delay_seconds"
    p = write(tmp_path, "r6.jsonl", [row("a", "1")])
    assert error(p, "rows").field == "turn"


def test_aiperf_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "a.jsonl", [{"session_id": "s", "turns": [{"text": "a"}, {"delay": 5}]}])
    assert (error(p).line, error(p).field) == (1, "turns[1].text")
    p = write(tmp_path, "a2.jsonl", [{"session_id": "s", "turns": [{"text": "a", "delay": -2}]}])
    assert error(p).field == "turns[0].delay"
    ok = write(
        tmp_path,
        "a3.jsonl",
        [
            {
                "session_id": "s",
                "turns": [
                    {"role": "system", "text": "sys"},
                    {"text": "a", "timestamp": 2000},
                    {"text": "b", "delay": 1500, "output_length": 7},
                ],
            }
        ],
    )
    (conv,) = load_dataset(ok).conversations
    assert conv.system == "sys" and conv.start_s == 2.0
    assert conv.turns[1].think_time_s == 1.5 and conv.turns[1].max_tokens == 7


def test_trace_errors_and_timestamp_gaps(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "t.jsonl",
        [{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": [1, "x"]}],
    )
    assert error(p).field == "hash_ids[1]"
    p = write(tmp_path, "t2.jsonl", [{"input_length": 5, "output_length": 2, "hash_ids": []}])
    assert error(p).field == "timestamp"
    p = write(
        tmp_path,
        "t3.jsonl",
        [{"timestamp": 0, "input_length": 0, "output_length": 2, "hash_ids": []}],
    )
    assert error(p, "trace").field == "input_length"
    sess = [
        {
            "session_id": "s",
            "timestamp": 1000,
            "input_length": 10,
            "output_length": 2,
            "hash_ids": [1, 2],
        },
        {
            "session_id": "s",
            "timestamp": 4000,
            "input_length": 14,
            "output_length": 2,
            "hash_ids": [1, 2, 3],
        },
    ]
    opts = DatasetOptions(trace={"block_size": 5, "time_scale": 2.0})  # type: ignore[arg-type]
    (conv,) = load_dataset(write(tmp_path, "t4.jsonl", sess), "trace", opts).conversations
    assert conv.start_s == 2.0 and conv.turns[1].think_time_s == 6.0
    assert conv.turns[1].messages[0]["content"].split(" ") == [
        "h3",
        *(conv.turns[1].messages[0]["content"].split(" ")[1:4]),
    ]
    assert len(conv.turns[1].messages[0]["content"].split(" ")) == 4


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.sampled_from(["user", "assistant", "tool", "human", "gpt"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "messages",
                    "conversations",
                    "from",
                    "value",
                    "id",
                    "conversation_id",
                    "turn",
                    "session_id",
                    "turns",
                    "text",
                    "hash_ids",
                    "input_length",
                    "output_length",
                    "timestamp",
                    "tool_calls",
                    "tool_results",
                    "delay",
                    "delay_seconds",
                    "tools",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(JSON_VALUES, min_size=1, max_size=4), fmt=st.sampled_from(FORMATS))
def test_fuzz_json_records(tmp_path: Path, records: list[object], fmt: str) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    try:
        load = load_dataset(path, fmt)  # type: ignore[arg-type]
        list(load.conversations)
    except InputError as err:
        assert err.file == str(path)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=200),
    fmt=st.sampled_from(FORMATS),
    suffix=st.sampled_from([".json", ".jsonl"]),
)
def test_fuzz_bytes(tmp_path: Path, data: bytes, fmt: str, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        list(load_dataset(path, fmt).conversations)  # type: ignore[arg-type]
    except InputError as err:
        assert err.file == str(path)


SMALL = st.none() | st.integers(-1, 3) | st.text(max_size=3) | st.just([]) | st.just({})
ROLE = st.sampled_from(
    ["system", "user", "assistant", "tool", "human", "gpt", "observation", "function_call", "x"]
)
CALL = st.just([{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
MESSAGE = st.fixed_dictionaries(
    {"role": ROLE, "content": st.text(max_size=3) | st.none()},
    optional={
        "tool_calls": CALL | SMALL,
        "delay_seconds": SMALL,
        "max_tokens": SMALL,
        "tool_call_id": SMALL,
    },
)
SHAPED = st.one_of(
    st.lists(MESSAGE, max_size=6),
    st.fixed_dictionaries(
        {"messages": st.lists(MESSAGE, max_size=6)},
        optional={"id": SMALL, "tools": SMALL, "metadata": SMALL},
    ),
    st.fixed_dictionaries(
        {
            "conversations": st.lists(
                st.fixed_dictionaries(
                    {"from": ROLE, "value": st.text(max_size=3) | st.just('{"name": "f"}')}
                ),
                max_size=6,
            )
        },
        optional={"id": st.sampled_from(["a_0", "a_2", "b", "a_x"]), "tools": SMALL},
    ),
    st.fixed_dictionaries(
        {"conversation_id": st.sampled_from(["a", "b"]), "turn": st.integers(0, 4), "role": ROLE},
        optional={
            "content": SMALL,
            "tool_calls": CALL | SMALL,
            "tool_results": st.just([{"tool_call_id": "c", "content": "r"}]) | SMALL,
            "system": SMALL,
            "delay_seconds": SMALL,
        },
    ),
    st.fixed_dictionaries(
        {
            "session_id": st.sampled_from(["a", "b"]),
            "turns": st.lists(
                st.fixed_dictionaries(
                    {"text": SMALL}, optional={"delay": SMALL, "role": ROLE, "timestamp": SMALL}
                ),
                max_size=3,
            ),
        }
    ),
    st.fixed_dictionaries(
        {"input_length": st.integers(-1, 40), "output_length": st.integers(-1, 3)},
        optional={
            "hash_ids": st.lists(st.integers(0, 3), max_size=4),
            "timestamp": SMALL,
            "delay": SMALL,
            "session_id": st.sampled_from(["a", "b"]),
        },
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=st.lists(SHAPED, min_size=1, max_size=5), fmt=st.sampled_from(FORMATS))
def test_fuzz_shaped_records(tmp_path: Path, records: list[object], fmt: str) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    opts = DatasetOptions(trace={"block_size": 4})  # type: ignore[arg-type]
    try:
        list(load_dataset(path, fmt, opts).conversations)  # type: ignore[arg-type]
    except InputError as err:
        assert err.file == str(path)
