"""History, prefix caching and the context policy, checked from events.db (issue 3 s3, s7)."""

from __future__ import annotations

import itertools
import json
import random
import statistics
from pathlib import Path

from runs import assert_one_in_flight, run_bench
from turnbench.config import SessionConfig
from turnbench.session import Session
from turnbench.tokens.template import MESSAGE_OVERHEAD, count_chat_tokens
from turnbench.workload.conversation import Conversation, Turn

SALT = 1
"""The run's salt word at the very start of each conversation (`cache.salt`, on by default)."""


def _synthetic(
    turns: int, user: int, out: int, system: int = 0, conversations: int = 4, groups: int = 1
) -> dict:
    return {
        "type": "synthetic",
        "conversations": conversations,
        "turns": turns,
        "input_tokens": user,
        "output_tokens": out,
        "system_prompt_tokens": system,
        "system_prompt_groups": groups,
    }


def test_live_history_grows_by_reply_and_new_message(tmp_path: Path) -> None:
    user, out = 17, 9
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay"], "api": "chat"},
            "workload": _synthetic(5, user, out, system=30),
            "session": {"ignore_eos": True},
            "load": {"mode": "parallel"},
        },
    )
    for sid, rows in result.by_session().items():
        assert [r["turn_index"] for r in rows] == [1, 2, 3, 4, 5]
        first = SALT + (30 + MESSAGE_OVERHEAD) + (user + MESSAGE_OVERHEAD) + 2
        assert rows[0]["prompt_tokens"] == first
        for a, b in itertools.pairwise(rows):
            assert a["completion_tokens"] == out and a["token_source"] == "usage"
            expected = a["prompt_tokens"] + out + MESSAGE_OVERHEAD + user + MESSAGE_OVERHEAD
            assert b["prompt_tokens"] == expected, sid
            assert b["context_messages"] == a["context_messages"] + 2


def test_completions_api_renders_the_same_history(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay"], "api": "completions"},
            "workload": _synthetic(3, 11, 5, system=8),
            "session": {"ignore_eos": True},
            "load": {"mode": "parallel"},
        },
    )
    for rows in result.by_session().values():
        assert rows[0]["prompt_tokens"] == SALT + 8 + 3 + 11 + 3 + 2
        for a, b in itertools.pairwise(rows):
            assert b["prompt_tokens"] == a["prompt_tokens"] + 5 + 3 + 11 + 3


def _write_dataset(path: Path) -> list[list[dict]]:
    convs = []
    for c in range(3):
        msgs = [{"role": "system", "content": f"You are assistant number {c}."}]
        for t in range(4):
            msgs.append({"role": "user", "content": f"question {t} of conversation {c} " * (t + 1)})
            msgs.append({"role": "assistant", "content": f"recorded answer {t}, " * (3 + t)})
        convs.append(msgs)
    path.write_text(
        "".join(json.dumps({"id": f"c{i}", "messages": m}) + "\n" for i, m in enumerate(convs))
    )
    return convs


def test_dataset_history_replays_recorded_replies(tmp_path: Path) -> None:
    convs = _write_dataset(tmp_path / "chats.jsonl")
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay"]},
            "workload": {"type": "dataset", "path": "chats.jsonl", "format": "messages"},
            "session": {"history": "dataset", "max_tokens": 7, "ignore_eos": True},
            "load": {"mode": "sequential"},
        },
    )
    rows = result.attempts
    assert len(rows) == 12
    for r in rows:
        msgs = convs[int(r["conversation_id"][1:])]
        upto = 1 + 2 * (r["turn_index"] - 1) + 1  # system + earlier pairs + this user message
        assert r["prompt_tokens"] == SALT + count_chat_tokens(msgs[:upto])


def test_turn_two_is_faster_with_the_prefix_cache_and_not_without(tmp_path: Path) -> None:
    slow_prefill = [
        "--prefill-ms-per-token",
        "0.25",
        "--ttft-base-ms",
        "5",
        "--decode-ms-base",
        "1",
    ]
    config = {
        "workload": _synthetic(4, 20, 8, system=1200, conversations=6, groups=6),
        "session": {"ignore_eos": True},
        "load": {"mode": "users", "users": 2},
    }

    def ratio(extra: list[str], sub: str) -> float:
        result = run_bench(tmp_path / sub, {**config, "target": {"sim_args": slow_prefill + extra}})
        ttft = {1: [], 2: []}
        for r in result.attempts:
            ttft[min(r["turn_index"], 2)].append(r["t_first_token_ns"] - r["t_sent_ns"])
        later_cached = [r["cached_tokens"] for r in result.attempts if r["turn_index"] > 1]
        assert_one_in_flight(result)
        per_turn = result.summary["per_turn"]
        assert [t["turn"] for t in per_turn] == [1, 2, 3, 4]
        return statistics.median(ttft[2]) / statistics.median(ttft[1]), min(later_cached)

    warm, warm_cached = ratio([], "warm")
    cold, cold_cached = ratio(["--kv-cache-tokens", "16"], "cold")
    assert warm_cached > 1000
    assert cold_cached < 32
    assert warm < 0.3, warm
    assert cold > 0.8, cold


def _session(
    turns: int, limit: int | None, policy: str, system: str | None = "sys " * 20
) -> Session:
    conv = Conversation(
        id="c",
        system=system,
        turns=tuple(Turn(input_tokens=50, max_tokens=20) for _ in range(turns)),
    )
    cfg = SessionConfig(context_policy=policy)  # type: ignore[arg-type]
    return Session("s", conv, cfg, max_context_tokens=limit, rng=random.Random(1))


def test_truncation_drops_oldest_turns_and_keeps_the_system_prompt() -> None:
    from turnbench.client.apis.base import Reply

    s = _session(8, 300, "truncate")
    for i in range(8):
        planned = s.build(i)
        assert planned is not None
        assert planned.messages[0]["role"] == "system"
        assert planned.messages[1]["role"] == "user"
        assert count_chat_tokens(planned.messages) + planned.max_tokens <= 300
        s.accept(planned, Reply(text_parts=["word " * 20]), None)
    assert s.dropped_messages > 0 and s.dropped_messages % 2 == 0


def test_stop_policy_ends_at_the_limit() -> None:
    from turnbench.client.apis.base import Reply

    s = _session(8, 300, "stop")
    built = 0
    while (planned := s.build(built)) is not None:
        s.accept(planned, Reply(text_parts=["word " * 20]), None)
        built += 1
    assert 1 <= built < 8


def test_truncate_keeps_every_request_under_the_limit_end_to_end(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay"]},
            "workload": _synthetic(8, 60, 30, system=40),
            "session": {"ignore_eos": True, "max_context_tokens": 400},
            "load": {"mode": "parallel"},
        },
    )
    rows = result.attempts
    assert all(r["status"] == "ok" for r in rows)
    assert all(r["prompt_tokens"] + 30 <= 400 for r in rows)
    assert max(r["dropped_messages"] for r in rows) > 0
    # The system prompt stays first: every later request still hits its cached block.
    assert all((r["cached_tokens"] or 0) >= 32 for r in rows if r["turn_index"] > 1)
    assert result.summary["per_conversation"]["dropped_messages"] > 0


def test_context_policies_stop_and_send_end_to_end(tmp_path: Path) -> None:
    base = {
        "target": {"sim_args": ["--zero-delay", "--max-model-len", "400"]},
        "workload": _synthetic(8, 60, 30, system=40, conversations=2),
        "session": {"ignore_eos": True},
        "load": {"mode": "parallel"},
    }
    stop = run_bench(
        tmp_path / "stop", {**base, "session": {**base["session"], "context_policy": "stop"}}
    )
    assert {s["outcome"] for s in stop.sessions} == {"context_full"}
    assert all(r["status"] == "ok" for r in stop.attempts)
    send = run_bench(
        tmp_path / "send", {**base, "session": {**base["session"], "context_policy": "send"}}
    )
    kinds = {r["error_kind"] for r in send.attempts if r["status"] == "error"}
    assert kinds == {"context_overflow"}
    assert send.summary["errors"] == {
        "context_overflow": sum(r["status"] == "error" for r in send.attempts)
    }
