"""Generated workloads (synthetic, shared_prefix), cycling with salt, and the seam."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from turnbench.tokens.template import count_tokens
from turnbench.workload.config import (
    DatasetWorkload,
    SharedPrefixWorkload,
    SyntheticWorkload,
    WorkloadConfig,
)
from turnbench.workload.sources import conversations

ADAPTER: TypeAdapter[WorkloadConfig] = TypeAdapter(WorkloadConfig)


def test_config_union_picks_by_type_and_forbids_extras() -> None:
    cfg = ADAPTER.validate_python(
        {"type": "synthetic", "turns": {"dist": "uniform", "min": 1, "max": 3}}
    )
    assert isinstance(cfg, SyntheticWorkload)
    assert isinstance(
        ADAPTER.validate_python(
            {"type": "dataset", "path": "x.jsonl", "trace": {"block_size": 16}}
        ),
        DatasetWorkload,
    )
    with pytest.raises(ValidationError):
        ADAPTER.validate_python({"type": "synthetic", "conversation": 3})
    with pytest.raises(ValidationError):
        ADAPTER.validate_python({"type": "dataset", "path": "x", "sharegpt": {"min_turn": 1}})


def test_every_config_field_has_a_description() -> None:
    for model in (SyntheticWorkload, DatasetWorkload, SharedPrefixWorkload):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name}"


def test_synthetic_is_deterministic_with_exact_lengths() -> None:
    cfg = SyntheticWorkload(
        conversations=6,
        turns={"dist": "uniform", "min": 2, "max": 4},  # type: ignore[arg-type]
        input_tokens={"dist": "uniform", "min": 10, "max": 50},  # type: ignore[arg-type]
        output_tokens=32,  # type: ignore[arg-type]
        system_prompt_tokens=40,
        system_prompt_groups=2,
    )
    a = list(conversations(cfg, seed=7, base_dir=Path(".")))
    b = list(conversations(cfg, seed=7, base_dir=Path(".")))
    c = list(conversations(cfg, seed=8, base_dir=Path(".")))
    assert a == b and a != c
    assert [x.id for x in a] == [f"syn-{i}" for i in range(6)]
    assert [x.metadata["prompt_group"] for x in a] == [0, 1] * 3
    assert all(x.group is None for x in a)  # not pinned to one worker: see Conversation.group
    for conv in a:
        assert conv.system is not None and count_tokens(conv.system) == 40
        assert 2 <= len(conv.turns) <= 4
        for turn in conv.turns:
            assert turn.messages == () and turn.max_tokens == 32
            assert turn.input_tokens is not None and 10 <= turn.input_tokens <= 50
    assert a[0].system == a[2].system == a[4].system != a[1].system
    assert (
        cfg.model_copy(update={"seed": 7})
        and list(conversations(cfg.model_copy(update={"seed": 7}), seed=99, base_dir=Path(".")))
        == a
    )


def test_synthetic_without_system_prompt() -> None:
    conv = next(conversations(SyntheticWorkload(conversations=1), seed=1, base_dir=Path(".")))
    assert conv.system is None and len(conv.turns) == 5
    assert all(t.input_tokens == 128 and t.max_tokens == 128 for t in conv.turns)


def test_cycle_ids_and_salt_on_system_prompt() -> None:
    cfg = SyntheticWorkload(conversations=2, system_prompt_tokens=8, cycle=True, salt=True)
    plans = list(itertools.islice(conversations(cfg, seed=1, base_dir=Path(".")), 6))
    assert [p.id for p in plans] == ["syn-0", "syn-1", "syn-0#1", "syn-1#1", "syn-0#2", "syn-1#2"]
    systems = [p.system for p in plans]
    assert len(set(systems)) == 5  # originals share group 0's prompt; every copy differs
    for p in plans[2:]:
        assert p.system is not None and count_tokens(p.system) == 9
        assert p.system.endswith(plans[0].system or "")


def test_salt_without_system_writes_the_first_user_message() -> None:
    cfg = SyntheticWorkload(conversations=1, turns=2, input_tokens=5, cycle=True, salt=True)  # type: ignore[arg-type]
    orig, copy1, copy2 = itertools.islice(conversations(cfg, seed=1, base_dir=Path(".")), 3)
    for copy in (copy1, copy2):
        first = copy.turns[0]
        assert first.input_tokens is None and count_tokens(first.messages[0]["content"]) == 5
        assert copy.turns[1] == orig.turns[1]
    assert copy1.turns[0] != copy2.turns[0]


def test_cycle_without_salt_keeps_content() -> None:
    cfg = SyntheticWorkload(conversations=1, cycle=True)
    a, b = itertools.islice(conversations(cfg, seed=1, base_dir=Path(".")), 2)
    assert b.id == "syn-0#1" and b.turns == a.turns and b.system == a.system


def test_no_cycle_plays_once() -> None:
    assert (
        len(list(conversations(SyntheticWorkload(conversations=3), seed=1, base_dir=Path("."))))
        == 3
    )


def test_shared_prefix_one_turn_requests() -> None:
    cfg = SharedPrefixWorkload(
        num_groups=3, prompts_per_group=4, system_prompt_len=50, question_len=10, output_len=20
    )
    plans = list(conversations(cfg, seed=1, base_dir=Path(".")))
    assert len(plans) == 12
    for g in range(3):
        group = [p for p in plans if p.group == str(g)]
        assert len(group) == 4 and len({p.system for p in group}) == 1
        assert all(count_tokens(p.system or "") == 50 for p in group)
        assert all(len(p.turns) == 1 and p.turns[0].max_tokens == 20 for p in group)
        assert all(count_tokens(p.turns[0].messages[0]["content"]) == 10 for p in group)
    assert len({p.system for p in plans}) == 3


def test_shared_prefix_ranges_and_sessions() -> None:
    cfg = SharedPrefixWorkload(
        num_groups=2,
        prompts_per_group=3,
        system_prompt_len=40,
        question_len=20,
        output_len=30,
        question_len_range_ratio=0.5,
        output_len_range_ratio=0.5,
        as_sessions=True,
        turns_per_session=7,
    )
    plans = list(conversations(cfg, seed=3, base_dir=Path(".")))
    assert [p.id for p in plans] == ["sp-g0", "sp-g1"] and [p.group for p in plans] == ["0", "1"]
    for p in plans:
        assert len(p.turns) == 7 and p.turns[3] == p.turns[0] and p.turns[6] == p.turns[0]
        for t in p.turns:
            assert 10 <= count_tokens(t.messages[0]["content"]) <= 20
            assert t.max_tokens is not None and 15 <= t.max_tokens <= 30


def test_plans_cross_processes_whole() -> None:
    """Plans are pickled to worker processes by their own `__reduce__`: every field survives."""
    import pickle

    from turnbench.workload.conversation import Conversation, Turn

    turn = Turn(
        messages=({"role": "user", "content": "hi"},),
        input_tokens=None,
        max_tokens=7,
        think_time_s=0.5,
        reply={"role": "assistant", "content": "yo"},
    )
    plan = Conversation(
        id="c#2",
        turns=(turn, Turn(input_tokens=12)),
        system="be brief",
        tools=({"type": "function", "function": {"name": "f"}},),
        group="g1",
        start_s=3.25,
        metadata={"source": "test"},
    )
    assert pickle.loads(pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)) == plan
