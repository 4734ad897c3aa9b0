"""`POST /v1/responses` with the official `openai` SDK as an outside client of `turnbench sim`:
stateless and chained by `previous_response_id`, streamed and not, usage with cached tokens,
the stored-response limit, errors, faults, replicas and metrics."""

from __future__ import annotations

import json
import random
import urllib.request
from typing import Any

import openai
import pytest

from conftest import SimProcess, question
from conftest import sim_metric as metric
from turnbench.tokens.template import count_chat_tokens, count_tokens, make_text

MODEL = "turnbench-sim"
INSTRUCTIONS = "You answer briefly and " + make_text(30, random.Random(9))
STREAM_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TAIL_TYPES = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def client(sim: SimProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.v1, api_key="x", max_retries=0)


def test_stateless_usage_and_status(fast_sim: SimProcess) -> None:
    msgs: list[dict[str, Any]] = [
        {"role": "developer", "content": "Be kind."},
        {"role": "user", "content": [{"type": "input_text", "text": question(1)}]},
    ]
    r = client(fast_sim).responses.create(
        model=MODEL,
        input=msgs,  # type: ignore[arg-type]
        instructions=INSTRUCTIONS,
        max_output_tokens=12,
        extra_body={"ignore_eos": True},
    )
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.status == "incomplete"  # the limit was reached
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    message = r.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    expected = count_chat_tokens([{"role": "system", "content": INSTRUCTIONS}, *msgs])
    assert r.usage is not None
    assert r.usage.input_tokens == expected
    assert r.usage.output_tokens == 12 == count_tokens(r.output_text)
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.usage.total_tokens == expected + 12
    natural = client(fast_sim).responses.create(model=MODEL, input=question(2))
    assert natural.status == "completed" and natural.incomplete_details is None
    assert natural.usage is not None and natural.usage.output_tokens > 0


def test_chained_turns_hold_the_conversation(fast_sim: SimProcess) -> None:
    c = client(fast_sim)
    instructions = "Chain " + INSTRUCTIONS  # a prefix no other test has cached
    conversation: list[dict[str, str]] = [{"role": "system", "content": instructions}]
    previous: str | None = None
    cached: list[int] = []
    for turn in range(3):
        user = question(10 + turn)
        conversation.append({"role": "user", "content": user})
        r = c.responses.create(
            model=MODEL,
            input=user,
            instructions=instructions,
            previous_response_id=previous,
            max_output_tokens=30,
        )
        assert r.usage is not None and r.previous_response_id == previous
        assert r.usage.input_tokens == count_chat_tokens(conversation)
        details = r.usage.input_tokens_details
        assert details.cached_tokens + details.cache_write_tokens <= r.usage.input_tokens
        cached.append(details.cached_tokens)
        conversation.append({"role": "assistant", "content": r.output_text})
        previous = r.id
    assert cached[0] == 0 and cached[1] > 0 and cached[2] > cached[1]
    # the same conversation sent whole gets the same prompt, hence the same reply, fully cached
    stateless = c.responses.create(
        model=MODEL,
        input=conversation[1:-1],  # type: ignore[arg-type]
        instructions=instructions,
        max_output_tokens=30,
    )
    assert stateless.output_text == conversation[-1]["content"]
    assert stateless.usage is not None
    assert stateless.usage.input_tokens == count_chat_tokens(conversation[:-1])
    assert stateless.usage.input_tokens_details.cached_tokens >= cached[2]


def test_output_items_fed_back_as_input(fast_sim: SimProcess) -> None:
    c = client(fast_sim)
    first: list[dict[str, Any]] = [{"role": "user", "content": question(20)}]
    r = c.responses.create(model=MODEL, input=first, max_output_tokens=20)  # type: ignore[arg-type]
    again = [*first, *(item.model_dump() for item in r.output), {"role": "user", "content": "ok"}]
    r2 = c.responses.create(model=MODEL, input=again, max_output_tokens=5)  # type: ignore[arg-type]
    assert r2.usage is not None and r2.usage.input_tokens_details.cached_tokens > 0
    chat = [*first, {"role": "assistant", "content": r.output_text}, again[-1]]
    assert r2.usage.input_tokens == count_chat_tokens(chat)


def test_stream_events(fast_sim: SimProcess) -> None:
    c = client(fast_sim)
    events = list(c.responses.create(model=MODEL, input=question(30), stream=True))
    types = [e.type for e in events]
    assert types[:4] == STREAM_TYPES
    assert types[-4:] == [*TAIL_TYPES, "response.completed"]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert types[4:-4] == ["response.output_text.delta"] * len(deltas) and deltas
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    text = "".join(d.delta for d in deltas)  # type: ignore[union-attr]
    assert text == final.output_text == events[-4].text  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.output_tokens == len(deltas)
    assert events[0].response.id == final.id and final.status == "completed"  # type: ignore[union-attr]
    # the same request unstreamed: the same reply and usage; the stream's id chains too
    whole = c.responses.create(model=MODEL, input=question(30))
    assert whole.output_text == text and whole.usage is not None
    assert whole.usage.input_tokens == final.usage.input_tokens
    assert whole.usage.output_tokens == final.usage.output_tokens
    assert whole.usage.input_tokens_details.cached_tokens > 0  # the stream's prompt is cached
    chained = c.responses.create(model=MODEL, input="more", previous_response_id=final.id)
    assert chained.usage is not None and chained.usage.input_tokens_details.cached_tokens > 0


def test_stream_incomplete_and_helper(fast_sim: SimProcess) -> None:
    c = client(fast_sim)
    events = list(
        c.responses.create(
            model=MODEL,
            input=question(31),
            max_output_tokens=4,
            stream=True,
            extra_body={"ignore_eos": True},
        )
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage.output_tokens == 4  # type: ignore[union-attr]
    with c.responses.stream(model=MODEL, input=question(32)) as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text


def test_function_call_items(fast_sim: SimProcess) -> None:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": "What is the weather?"},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"at":"x"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny and warm"},
    ]
    r = client(fast_sim).responses.create(model=MODEL, input=items, max_output_tokens=5)  # type: ignore[arg-type]
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"at":"x"}'},
    }
    chat = [
        items[0],
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "sunny and warm"},
    ]
    assert r.usage is not None and r.usage.input_tokens == count_chat_tokens(chat)


def test_errors(fast_sim: SimProcess) -> None:
    c = client(fast_sim)
    before = metric(fast_sim, "turnbench_sim_requests_total", outcome="error")
    with pytest.raises(openai.NotFoundError) as missing:
        c.responses.create(model=MODEL, input="hi", previous_response_id="resp_unknown")
    assert missing.value.code == "previous_response_not_found"
    assert missing.value.param == "previous_response_id"
    kept_out = c.responses.create(model=MODEL, input="hi", store=False, max_output_tokens=3)
    assert kept_out.store is False
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model=MODEL, input="again", previous_response_id=kept_out.id)
    with pytest.raises(openai.BadRequestError):
        c.responses.create(model=MODEL, input=[{"type": "reasoning", "summary": []}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError):
        c.responses.create(model=MODEL, input="hi", max_output_tokens=0)
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model="other-model", input="hi")
    long_input = make_text(132_000, random.Random(0))  # beyond the 128k context
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        c.responses.create(model=MODEL, input=long_input)
    assert metric(fast_sim, "turnbench_sim_requests_total", outcome="error") - before == 6


def test_stored_responses_limit(sim_factory: Any) -> None:
    """Two kept: the third response drops the first; a chained turn touches what it reads."""
    sim = sim_factory("--zero-delay", "--stored-responses", "2")
    c = client(sim)

    def ask(previous: str | None = None, store: bool = True) -> str:
        return c.responses.create(
            model=MODEL, input="x", previous_response_id=previous, store=store, max_output_tokens=2
        ).id

    ids = [ask() for _ in range(3)]
    with pytest.raises(openai.NotFoundError):
        ask(ids[0])
    ask(ids[1], store=False)  # read, so ids[1] becomes the most recently used
    ask()  # kept: drops the least recently used, ids[2]
    ask(ids[1], store=False)
    with pytest.raises(openai.NotFoundError):
        ask(ids[2])


def test_faults_reach_the_sdk(sim_factory: Any) -> None:
    broken = client(sim_factory("--zero-delay", "--fault", "http500=1"))
    with pytest.raises(openai.InternalServerError):
        broken.responses.create(model=MODEL, input="hi")
    with pytest.raises(openai.InternalServerError):
        list(broken.responses.create(model=MODEL, input="hi", stream=True))
    busy = client(sim_factory("--zero-delay", "--fault", "http429=1"))
    with pytest.raises(openai.RateLimitError):
        busy.responses.create(model=MODEL, input="hi")
    sim = sim_factory("--zero-delay", "--fault", "truncate=1")
    events = list(client(sim).responses.create(model=MODEL, input=question(40), stream=True))
    assert [e.type for e in events] == [*STREAM_TYPES, *["response.output_text.delta"] * 3]
    assert metric(sim, "turnbench_sim_requests_total", outcome="truncate") == 1
    with pytest.raises(openai.NotFoundError):  # a broken reply is not stored
        client(sim).responses.create(
            model=MODEL, input="x", previous_response_id=events[0].response.id
        )  # type: ignore[union-attr]


def test_replicas_and_metrics(sim_factory: Any) -> None:
    sim = sim_factory("--zero-delay", "--replicas", "2", "--router", "round-robin")
    c = client(sim)
    hits0 = metric(sim, "vllm:prefix_cache_hits_total")
    served, cached = [], []
    previous = None
    for turn in range(3):
        raw = c.responses.with_raw_response.create(
            model=MODEL,
            input=question(50 + turn),
            previous_response_id=previous,
            max_output_tokens=10,
            extra_headers={"X-Session-ID": "resp-session"},
            extra_body={"ignore_eos": True},
        )
        served.append(raw.headers["x-served-by"])
        r = raw.parse()
        assert r.usage is not None
        cached.append(r.usage.input_tokens_details.cached_tokens)
        previous = r.id
    assert served == ["replica-0", "replica-1", "replica-0"]
    # turn 2 moved to a cold replica; turn 3 came back to the one holding turn 1
    assert cached[0] == 0 and cached[1] == 0 and cached[2] > 0
    assert metric(sim, "vllm:prefix_cache_hits_total") - hits0 == sum(cached)
    assert metric(sim, "turnbench_sim_session_requests_total", session="resp-session") == 3
    assert metric(sim, "turnbench_sim_requests_total", outcome="ok") == 3
    assert metric(sim, "vllm:generation_tokens_total") == 30


def test_raw_stream_has_event_lines(fast_sim: SimProcess) -> None:
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 3, "stream": True}
    req = urllib.request.Request(
        fast_sim.v1 + "/responses", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = resp.read().decode()
    blocks = [b for b in raw.split("\n\n") if b]
    for block in blocks:
        event, data = block.split("\n")
        assert event.removeprefix("event: ") == json.loads(data.removeprefix("data: "))["type"]
    assert "[DONE]" not in raw
