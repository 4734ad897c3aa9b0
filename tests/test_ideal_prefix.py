"""The ideal cached prefix against what the simulator's cache held, and the run's salt.

Against a simulator whose cache never evicts, every request's reported cached tokens equal
its ideal to within a block; with a small cache the report finds the cliff after the
simulator's own counter says it evicted; a run repeated unsalted against a warm simulator is
warned about, a salted one finds nothing of the earlier run. Then the session's bookkeeping
alone: retries, truncation, recorded replies and where the salt goes.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

from conftest import SimProcess
from runs import RunResult, run_bench
from turnbench.cache.registry import BlockRegistry
from turnbench.client.apis.base import Reply
from turnbench.client.apis.chat import ChatApi
from turnbench.client.apis.completions import CompletionsApi
from turnbench.client.attempt import Attempt
from turnbench.config import SessionConfig
from turnbench.session import Session
from turnbench.tokens.template import count_chat_tokens
from turnbench.workload.conversation import Conversation, Turn

BLOCK = 16
EVICTED = "turnbench_sim_prefix_cache_evicted_blocks_total"


def _synthetic(conversations: int, turns: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "synthetic",
        "conversations": conversations,
        "turns": turns,
        "input_tokens": {"dist": "uniform", "min": 40, "max": 120},
        "output_tokens": {"dist": "uniform", "min": 20, "max": 60},
        **extra,
    }


def _ok_rows(result: RunResult) -> list[sqlite3.Row]:
    return result.rows("SELECT * FROM requests WHERE status = 'ok' ORDER BY t_sent_ns")


def test_a_cache_that_never_evicts_holds_the_ideal(tmp_path: Path, fast_sim: SimProcess) -> None:
    """Sessions overlap (session-rate), share two system prompts and grow by live replies
    with punctuation: every realised count is its ideal to within one block."""
    result = run_bench(
        tmp_path,
        {
            "target": {"url": fast_sim.url},
            "workload": _synthetic(24, 5, system_prompt_tokens=100, system_prompt_groups=2),
            "session": {"think_time": 0.02},
            "load": {"mode": "session-rate", "rate": 80},
        },
    )
    rows = _ok_rows(result)
    assert len(rows) == 24 * 5
    for r in rows:
        assert r["ideal_cached_tokens"] is not None and r["ideal_cached_tokens"] % BLOCK == 0
        assert abs(r["cached_tokens"] - r["ideal_cached_tokens"]) <= BLOCK, dict(r)
    later = [r for r in rows if r["turn_index"] > 1]
    assert all(r["ideal_cached_tokens"] > 0 for r in later)
    exact = sum(r["cached_tokens"] == r["ideal_cached_tokens"] for r in rows)
    assert exact >= 0.9 * len(rows)
    cache = result.summary["cache"]
    assert cache["cliff"] is None
    assert 0.97 <= cache["totals"]["kept"] <= 1.03


def test_a_small_cache_shows_its_cliff(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory("--set", "zero_delay=true", "--kv-cache-tokens", "6000")
    result = run_bench(
        tmp_path,
        {
            "target": {"url": sim.url, "metrics_interval_s": 0.25},
            "workload": _synthetic(None, 6),
            "session": {"think_time": 0.3},
            "load": {"mode": "session-rate", "rate": 12, "duration_s": 6},
        },
    )
    rows = _ok_rows(result)
    short = [r for r in rows if r["ideal_cached_tokens"] - r["cached_tokens"] >= BLOCK]
    assert len(short) > len(rows) / 4
    cache = result.summary["cache"]
    assert cache["totals"]["kept"] < 0.9
    cliff = cache["cliff"]
    assert cliff is not None and cliff["kept_after"] < 0.9 <= cliff["kept_before"]
    assert cliff["live_sessions"] > 1
    # the simulator's own counter: it had evicted by the cliff (to within a scrape)
    evictions = result.rows(
        "SELECT t_ns, value FROM server_metrics WHERE name = ? ORDER BY t_ns", EVICTED
    )
    first = next(t for t, value in evictions if value > 0) / 1e9
    assert first <= cliff["time_s"] + cache["over_time"]["bin_s"] + 0.25


def _early_cached(result: RunResult) -> list[int]:
    """Cached tokens of the requests sent before the run's first token."""
    return [
        r[0]
        for r in result.rows(
            "SELECT cached_tokens FROM requests WHERE t_sent_ns < "
            "(SELECT MIN(t_first_token_ns) FROM requests)"
        )
    ]


def test_a_warm_simulator_is_noticed_unless_salted(tmp_path: Path, fast_sim: SimProcess) -> None:
    def run(name: str, salt: bool) -> RunResult:
        return run_bench(
            tmp_path / name,
            {
                "target": {"url": fast_sim.url},
                "workload": _synthetic(6, 2, seed=41),
                "cache": {"salt": salt},
                "load": {"mode": "parallel"},
            },
        )

    run("first", salt=False)
    again = run("again", salt=False)  # the same conversations, byte for byte
    warm = again.summary["cache"]["warm_start"]
    assert warm["checked"] and warm["warm"] and warm["with_cached"] > 0
    assert any("warm at the start" in n for n in again.summary["verdict"]["notes"])
    assert any("warm at the start" in line for line in again.output.splitlines())
    salted = run("salted", salt=True)
    assert salted.summary["config"]["resolved"]["cache_salt"].startswith("r")
    assert _early_cached(salted) and all(c == 0 for c in _early_cached(salted))
    assert not salted.summary["cache"]["warm_start"]["warm"]
    assert not any("warm at the start" in n for n in salted.summary["verdict"]["notes"])


# ---------------------------------------------------------------------------------------------
# the session's bookkeeping, no server


def _session(
    conv: Conversation, registry: BlockRegistry | None = None, **kw: Any
) -> tuple[Session, BlockRegistry]:
    registry = registry if registry is not None else BlockRegistry(BLOCK, 64)
    cfg = SessionConfig(**kw.pop("cfg", {}))
    session = Session(
        "s", conv, cfg, max_context_tokens=kw.pop("limit", None),
        rng=random.Random(kw.pop("seed", 1)),
        registry=registry, **kw,
    )  # fmt: skip
    return session, registry


def _reply(n: int) -> Reply:
    return Reply(text_parts=[" ".join(["word"] * n)])


def test_a_retry_finds_its_first_attempt_and_a_new_session_the_system_prompt() -> None:
    system = " ".join(["shared"] * 100)
    conv = Conversation("c", (Turn(input_tokens=50), Turn(input_tokens=30)), system=system)
    session, registry = _session(conv)
    planned = session.build(0)
    assert planned is not None and planned.context_tokens == 103 + 53 + 2
    assert session.sent(planned) == 0  # nothing computed yet
    session.computed()  # the first attempt got its first token, then failed
    assert session.sent(planned) == (158 - 1) // BLOCK * BLOCK  # all but its last token
    session.computed()
    session.accept(planned, _reply(20), planned.context_tokens, 20)
    second = session.build(1)
    assert second is not None
    # the prompt and the reply (but its end marker) are held: 158 + 20 tokens
    assert session.sent(second) == (158 + 20) // BLOCK * BLOCK
    other, _ = _session(conv, registry, seed=2)  # another session of the same worker
    first = other.build(0)
    assert first is not None
    assert other.sent(first) == 103 // BLOCK * BLOCK  # the system message, whole blocks


def test_truncation_keeps_the_system_prompt_held() -> None:
    turns = tuple(Turn(input_tokens=60, max_tokens=10) for _ in range(4))
    conv = Conversation("c", turns, system=" ".join(["sys"] * 40))
    session, _ = _session(conv, limit=260)
    for i in range(4):
        planned = session.build(i)
        assert planned is not None
        ideal = session.sent(planned)
        assert ideal is not None
        if planned.dropped_messages:  # the history was cut: only the system prompt is left
            assert ideal == 43 // BLOCK * BLOCK
        session.computed()
        session.accept(planned, _reply(10), planned.context_tokens, 10)
    assert session.dropped_messages > 0


def test_a_recorded_reply_is_not_held() -> None:
    """With `history: dataset` the server wrote its own reply, not the recorded one: only the
    prompt is held."""
    recorded = {"role": "assistant", "content": "recorded " * 30}
    turns = (
        Turn(messages=({"role": "user", "content": "question one " * 20},), reply=recorded),
        Turn(messages=({"role": "user", "content": "question two"},)),
    )
    session, _ = _session(Conversation("c", turns), cfg={"history": "dataset"})
    planned = session.build(0)
    assert planned is not None
    session.sent(planned)
    session.computed()
    session.accept(planned, _reply(30), planned.context_tokens, 30)
    second = session.build(1)
    assert second is not None
    assert session.sent(second) == planned.context_tokens // BLOCK * BLOCK


def test_the_salt_starts_every_conversation() -> None:
    user = {"role": "user", "content": "hello there"}
    with_system = Conversation("a", (Turn(messages=(user,)),), system="be brief")
    plain = Conversation("b", (Turn(messages=(user,)),))
    written = Conversation("c", (Turn(input_tokens=7),))
    for conv in (with_system, plain, written):
        session, _ = _session(conv, salt="r0badcafe")
        planned = session.build(0)
        assert planned is not None
        assert planned.messages[0]["content"].startswith("r0badcafe ")
        assert sum(m["content"].startswith("r0badcafe") for m in planned.messages) == 1
        unsalted, _ = _session(conv)
        base = unsalted.build(0)
        assert base is not None
        assert count_chat_tokens(planned.messages) == count_chat_tokens(base.messages) + 1
        assert planned.context_tokens == base.context_tokens + 1
    assert json.dumps(user) == '{"role": "user", "content": "hello there"}'  # not mutated


def test_llama_cpp_timings_give_the_cached_tokens_when_usage_does_not() -> None:
    """An older llama-server reports its prompt cache only as `timings.cache_n`."""
    last = {
        "choices": [],
        "usage": {"prompt_tokens": 300, "completion_tokens": 12},
        "timings": {"cache_n": 272, "prompt_n": 28},
    }
    for api in (ChatApi(), CompletionsApi()):
        reply = Reply()
        api.read(b"data: " + json.dumps(last).encode() + b"\n\n", reply)
        att = Attempt("main", 0, "s", "c", 1, 1, 0)
        api.usage(reply, att)
        assert (att.prompt_tokens, att.cached_tokens) == (300, 272)
        with_details = {
            **last,
            "usage": {**last["usage"], "prompt_tokens_details": {"cached_tokens": 256}},
        }
        reply = Reply()
        api.read(b"data: " + json.dumps(with_details).encode() + b"\n\n", reply)
        api.usage(reply, att)
        assert att.cached_tokens == 256  # the OpenAI field first


def test_a_match_inside_a_message_counts_its_shared_pieces() -> None:
    """Prompts that share part of one long message (as a trace's hash blocks do): the ideal
    covers the shared text to within a piece (128 characters, here 64 tokens), whether one
    earlier text shared the first piece or several did (then kept as piece keys)."""
    shared = "a " * 300  # 300 tokens, 600 characters
    texts = {
        "first": shared + "b " * 200,
        "second": shared + "c " * 200,
        "longer": shared + "b " * 200 + "d " * 100,  # all of the first, then more
        "same": shared + "c " * 200,  # the second again, whole
    }
    registry = BlockRegistry(BLOCK, 64)
    ideals: dict[str, int] = {}
    for name, text in texts.items():
        conv = Conversation(name, (Turn(messages=({"role": "user", "content": text},)),))
        session, _ = _session(conv, registry)
        planned = session.build(0)
        assert planned is not None
        ideal = session.sent(planned)
        assert ideal is not None
        ideals[name] = ideal
        session.computed()
        session.accept(planned, _reply(5), planned.context_tokens, 5)
    piece_tokens = 64
    assert ideals["first"] == 0
    for name, common in (("second", 2 + 300), ("longer", 2 + 500)):
        assert common - piece_tokens - BLOCK < ideals[name] <= common // BLOCK * BLOCK, name
    prompt = 2 + 500 + 1 + 2
    assert ideals["same"] == (prompt - 1) // BLOCK * BLOCK
