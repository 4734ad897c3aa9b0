"""`POST /v1/messages` with the official `anthropic` SDK as an outside client of `turnbench sim`:
`messages.create` and `messages.stream` over multi-turn conversations, the usage's prompt split
(uncached input, cache read, cache creation), tool blocks, errors, faults and metrics."""

from __future__ import annotations

import json
import random
import urllib.request
from typing import Any

import anthropic
import pytest

from conftest import SimProcess, question
from conftest import sim_metric as metric
from turnbench.tokens.template import count_chat_tokens, count_tokens, make_text

MODEL = "turnbench-sim"
BLOCK = 16
"""The simulator's default `block_size`."""


def client(sim: SimProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key="x", max_retries=0)


def prompt_total(usage: Any) -> int:
    return int(
        usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    )


def check_split(usage: Any, expected_prompt: int) -> None:
    """The documented split: cache read + creation are whole blocks, the rest under a block."""
    assert prompt_total(usage) == expected_prompt
    assert usage.cache_read_input_tokens % BLOCK == 0
    assert (usage.cache_read_input_tokens + usage.cache_creation_input_tokens) % BLOCK == 0
    assert 0 <= usage.input_tokens < BLOCK


def test_create_multi_turn_reads_the_cache(fast_sim: SimProcess) -> None:
    c = client(fast_sim)
    system = "You are terse. " + make_text(40, random.Random(1))
    history: list[dict[str, Any]] = []
    reads = []
    for turn in range(3):
        history.append({"role": "user", "content": question(turn)})
        m = c.messages.create(model=MODEL, max_tokens=25, system=system, messages=history)  # type: ignore[arg-type]
        assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
        assert m.content[0].type == "text" and m.stop_reason in ("end_turn", "max_tokens")
        text = m.content[0].text
        assert m.usage.output_tokens == count_tokens(text) <= 25
        check_split(m.usage, count_chat_tokens([{"role": "system", "content": system}, *history]))
        reads.append(m.usage.cache_read_input_tokens)
        history.append({"role": "assistant", "content": [{"type": "text", "text": text}]})
    assert reads[0] == 0 and 0 < reads[1] < reads[2]


def test_stream_matches_create(fast_sim: SimProcess) -> None:
    c = client(fast_sim)
    history: list[dict[str, Any]] = [{"role": "user", "content": question(10)}]
    for turn in range(2):
        with c.messages.stream(model=MODEL, max_tokens=200, messages=history) as stream:  # type: ignore[arg-type]
            events = [e for e in stream if e.type != "text"]  # the helper's own text events
            final = stream.get_final_message()
        types = [e.type for e in events]
        deltas = [e for e in events if e.type == "content_block_delta"]
        assert types[:2] == ["message_start", "content_block_start"]
        assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert types[2:-3] == ["content_block_delta"] * len(deltas) and deltas
        text = "".join(d.delta.text for d in deltas)  # type: ignore[union-attr]
        assert final.content[0].text == text  # type: ignore[union-attr]
        assert final.usage.output_tokens == len(deltas) == count_tokens(text)
        assert final.stop_reason == "end_turn"
        check_split(final.usage, count_chat_tokens(history))
        if turn:
            assert final.usage.cache_read_input_tokens > 0
        history.append({"role": "assistant", "content": text})
        history.append({"role": "user", "content": question(11 + turn)})
    whole = c.messages.create(model=MODEL, max_tokens=200, messages=history[:-2])  # type: ignore[arg-type]
    assert whole.content[0].text == history[-2]["content"]  # type: ignore[union-attr]


def test_stop_sequences_end_the_reply_and_are_named(fast_sim: SimProcess) -> None:
    """A stop sequence cuts the reply before it (not part of the text), with Anthropic's
    `stop_reason: stop_sequence` and the sequence named, created and streamed alike."""
    c = client(fast_sim)
    messages = [{"role": "user", "content": question(21)}]
    free = c.messages.create(model=MODEL, max_tokens=200, messages=messages)  # type: ignore[arg-type]
    text = free.content[0].text  # type: ignore[union-attr]
    word = next(w for w in text.split()[2:] if w.isalpha())  # a word the reply goes on to say
    stop = " " + word
    cut = c.messages.create(model=MODEL, max_tokens=200, messages=messages, stop_sequences=[stop])  # type: ignore[arg-type]
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    kept = cut.content[0].text  # type: ignore[union-attr]
    assert stop not in kept and text.startswith(kept) and len(kept) < len(text)
    with c.messages.stream(
        model=MODEL,
        max_tokens=200,
        messages=messages,  # type: ignore[arg-type]
        stop_sequences=[stop],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop
    assert final.content[0].text == kept  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError, match="stop_sequences"):
        c.messages.create(model=MODEL, max_tokens=5, messages=messages, stop_sequences=[3])  # type: ignore[arg-type, list-item]


def test_stream_create_and_max_tokens(fast_sim: SimProcess) -> None:
    events = list(
        client(fast_sim).messages.create(
            model=MODEL,
            max_tokens=6,
            messages=[{"role": "user", "content": question(20)}],
            stream=True,
            extra_body={"ignore_eos": True},
        )
    )
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "max_tokens" and delta.usage.output_tokens == 6  # type: ignore[union-attr]
    start = events[0].message  # type: ignore[union-attr]
    assert start.usage.output_tokens == 0 and start.stop_reason is None


def test_raw_stream_has_ping_and_event_lines(fast_sim: SimProcess) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 3,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    req = urllib.request.Request(
        fast_sim.url + "/v1/messages",
        data=json.dumps(body).encode(),
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = resp.read().decode()
    names = []
    for block in (b for b in raw.split("\n\n") if b):
        event, data = block.split("\n")
        names.append(event.removeprefix("event: "))
        assert names[-1] == json.loads(data.removeprefix("data: "))["type"]
    assert names[:3] == ["message_start", "content_block_start", "ping"]


def test_tool_round_trip_and_cache_control(fast_sim: SimProcess) -> None:
    c = client(fast_sim)
    tools = [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather in " + make_text(20, random.Random(3))},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "x"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny"},
                {"type": "text", "text": "Thanks", "cache_control": {"type": "ephemeral"}},
            ],
        },
    ]
    system = [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]
    m = c.messages.create(model=MODEL, max_tokens=8, system=system, tools=tools, messages=messages)  # type: ignore[arg-type]
    call = {"id": "tu_1", "name": "weather", "input": {"city": "x"}}
    chat = [
        {"role": "system", "content": "sys"},
        messages[0],
        {"role": "assistant", "content": "Let me look.", "tool_calls": [call]},
        {"role": "user", "content": "sunnyThanks"},
    ]
    check_split(m.usage, count_chat_tokens(chat))
    # the markers change nothing: the same prompt, the same reply
    plain = json.loads(json.dumps(messages).replace(', "cache_control": {"type": "ephemeral"}', ""))
    again = c.messages.create(model=MODEL, max_tokens=8, system="sys", messages=plain)
    assert again.content == m.content and prompt_total(again.usage) == prompt_total(m.usage)
    assert again.usage.cache_read_input_tokens > 0


def test_errors(fast_sim: SimProcess) -> None:
    c = client(fast_sim)
    before = metric(fast_sim, "turnbench_sim_requests_total", outcome="error")
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.BadRequestError) as missing:
        c.messages.create(model=MODEL, messages=hi, max_tokens=anthropic.omit, timeout=30)  # type: ignore[arg-type]
    assert missing.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    with pytest.raises(anthropic.BadRequestError, match="image"):
        c.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [image]}]
        )  # type: ignore[list-item]
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "tool", "content": "x"}])  # type: ignore[misc,list-item]
    with pytest.raises(anthropic.NotFoundError) as unknown:
        c.messages.create(model="claude-x", max_tokens=5, messages=hi)  # type: ignore[arg-type]
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    long = [{"role": "user", "content": make_text(131_070, random.Random(0))}]  # > 128k
    with pytest.raises(anthropic.BadRequestError, match="maximum context length"):
        c.messages.create(model=MODEL, max_tokens=100, messages=long)  # type: ignore[arg-type]
    assert metric(fast_sim, "turnbench_sim_requests_total", outcome="error") - before == 5


def test_faults_reach_the_sdk(sim_factory: Any) -> None:
    hi = [{"role": "user", "content": question(30)}]
    broken = client(sim_factory("--zero-delay", "--fault", "http500=1"))
    with pytest.raises(anthropic.InternalServerError) as err:
        broken.messages.create(model=MODEL, max_tokens=5, messages=hi)  # type: ignore[arg-type]
    assert err.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with (
        pytest.raises(anthropic.InternalServerError),
        broken.messages.stream(model=MODEL, max_tokens=5, messages=hi) as s,  # type: ignore[arg-type]
    ):
        s.get_final_message()
    busy = client(sim_factory("--zero-delay", "--fault", "http429=1"))
    with pytest.raises(anthropic.RateLimitError) as limited:
        busy.messages.create(model=MODEL, max_tokens=5, messages=hi)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "1"
    sim = sim_factory("--zero-delay", "--fault", "malformed=1")
    with (
        pytest.raises(ValueError),  # the SDK reads the broken event: it has an `event:` line
        client(sim).messages.stream(model=MODEL, max_tokens=10, messages=hi) as s,  # type: ignore[arg-type]
    ):
        s.get_final_message()
    assert metric(sim, "turnbench_sim_requests_total", outcome="malformed") == 1


def test_sticky_replicas_and_metrics(sim_factory: Any) -> None:
    sim = sim_factory("--zero-delay", "--replicas", "3")
    c = client(sim)
    hits0 = metric(sim, "vllm:prefix_cache_hits_total")
    history: list[dict[str, Any]] = []
    served, reads = set(), 0
    for turn in range(3):
        history.append({"role": "user", "content": question(40 + turn)})
        raw = c.messages.with_raw_response.create(
            model=MODEL,
            max_tokens=10,
            messages=history,  # type: ignore[arg-type]
            extra_headers={"X-Session-ID": "msg-session"},
            extra_body={"ignore_eos": True},
        )
        served.add(raw.headers["x-served-by"])
        m = raw.parse()
        reads += m.usage.cache_read_input_tokens
        if turn:
            assert m.usage.cache_read_input_tokens > 0  # sticky: always the same warm replica
        history.append({"role": "assistant", "content": m.content[0].text})  # type: ignore[union-attr]
    assert len(served) == 1
    assert metric(sim, "vllm:prefix_cache_hits_total") - hits0 == reads
    assert metric(sim, "turnbench_sim_session_requests_total", session="msg-session") == 3
    assert metric(sim, "turnbench_sim_requests_total", outcome="ok") == 3
    assert metric(sim, "vllm:generation_tokens_total") == 30
