"""The simulator's OpenAI surface over real HTTP: SDK calls, raw SSE, errors, tokenize, metrics."""

from __future__ import annotations

import json
import random
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SimProcess, start_sim
from turnbench.tokens.template import count_chat_tokens, count_tokens, make_text


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimProcess]:
    """One zero-delay simulator for the whole module (startup costs about a second)."""
    s = start_sim("--zero-delay", "--seed", "7", "--max-model-len", "8192")
    yield s
    s.stop()


def post(
    url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST raw bytes or JSON; return status, headers and body without raising on 4xx/5xx."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def metric(sim: SimProcess, name: str, **labels: str) -> float:
    """Read one series from /metrics (0 when absent)."""
    text = get(sim.url + "/metrics").decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def client(sim: SimProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.v1, api_key="none", max_retries=0)


def messages(n_words: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"role": "system", "content": make_text(n_words, rng)},
        {"role": "user", "content": "What is " + make_text(5, rng) + "?"},
    ]


def test_chat_stream_counts_and_usage(shared_sim: SimProcess) -> None:
    msgs = messages(50, 1)
    stream = client(shared_sim).chat.completions.create(
        model="turnbench-sim",
        messages=msgs,  # type: ignore[arg-type]
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 40
    assert all(count_tokens(c.choices[0].delta.content or "") == 1 for c in content)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in content)
    assert usage.completion_tokens == count_tokens(text) == 40
    assert usage.prompt_tokens == count_chat_tokens(msgs)
    assert usage.total_tokens == usage.prompt_tokens + 40


def test_chat_non_stream_is_deterministic(shared_sim: SimProcess) -> None:
    msgs = messages(30, 2)
    c = client(shared_sim)
    a = c.chat.completions.create(model="turnbench-sim", messages=msgs, seed=3)  # type: ignore[arg-type]
    b = c.chat.completions.create(model="turnbench-sim", messages=msgs, seed=3)  # type: ignore[arg-type]
    other = c.chat.completions.create(model="turnbench-sim", messages=msgs, seed=4)  # type: ignore[arg-type]
    text = a.choices[0].message.content or ""
    assert text == b.choices[0].message.content
    assert text != other.choices[0].message.content
    assert a.usage is not None and a.usage.completion_tokens == count_tokens(text) > 0
    assert a.choices[0].finish_reason in ("stop", "length")


def test_completions_stream_and_not(shared_sim: SimProcess) -> None:
    c = client(shared_sim)
    prompt = make_text(25, random.Random(3))
    full = c.completions.create(model="turnbench-sim", prompt=prompt, max_tokens=12)
    assert full.usage is not None and full.usage.prompt_tokens == count_tokens(prompt)
    assert full.usage.completion_tokens == count_tokens(full.choices[0].text) <= 12
    stream = c.completions.create(
        model="turnbench-sim",
        prompt=prompt,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(ch.object == "text_completion" for ch in chunks)
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == full.choices[0].text  # same request, same reply, streamed or not
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_tokens(text)


def test_raw_sse_format(shared_sim: SimProcess) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    req = urllib.request.Request(
        shared_sim.v1 + "/chat/completions", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = resp.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    objs = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert {o["object"] for o in objs} == {"chat.completion.chunk"}
    assert len({o["id"] for o in objs}) == 1


def test_stop_and_unknown_fields(shared_sim: SimProcess) -> None:
    c = client(shared_sim)
    base = c.completions.create(
        model="turnbench-sim", prompt="tell", max_tokens=30, extra_body={"ignore_eos": True}
    )
    words = base.choices[0].text.split()
    stop = words[5]
    stopped = c.completions.create(
        model="turnbench-sim",
        prompt="tell",
        max_tokens=30,
        stop=[stop],
        temperature=0.7,
        user="u1",
        extra_body={"ignore_eos": True, "top_k": 5, "some_vendor_field": {"x": 1}},
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stop not in stopped.choices[0].text
    assert base.choices[0].text.startswith(stopped.choices[0].text)
    assert stopped.usage is not None
    assert stopped.usage.completion_tokens == count_tokens(stopped.choices[0].text)


def test_tools_and_max_completion_tokens(shared_sim: SimProcess) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = client(shared_sim).chat.completions.create(
        model="turnbench-sim",
        messages=[{"role": "user", "content": "call f"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice="auto",
        max_completion_tokens=7,
        metadata={"k": "v"},
        extra_body={"ignore_eos": True, "min_tokens": 2},
    )
    assert r.usage is not None and r.usage.completion_tokens == 7
    assert not r.choices[0].message.tool_calls


def test_errors(shared_sim: SimProcess) -> None:
    url = shared_sim.v1 + "/chat/completions"
    before = metric(shared_sim, "turnbench_sim_requests_total", outcome="error")
    status, _, body = post(url, b"{not json")
    assert status == 400 and "error" in json.loads(body)
    status, _, body = post(url, {"model": "turnbench-sim"})
    assert status == 400 and json.loads(body)["error"]["param"] == "messages"
    status, _, _ = post(url, {"messages": "hi"})
    assert status == 400
    status, _, _ = post(url, {"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"})
    assert status == 400
    status, _, body = post(url, {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})
    assert status == 404 and "gpt-9" in json.loads(body)["error"]["message"]
    msgs = [{"role": "user", "content": make_text(8000 - 5, random.Random(0))}]
    assert count_chat_tokens(msgs) == 8000
    status, _, body = post(url, {"messages": msgs, "max_tokens": 1000})
    assert status == 400
    assert json.loads(body)["error"]["message"] == (
        "This model's maximum context length is 8192 tokens. However, you requested 9000 "
        "tokens (8000 in the messages, 1000 in the completion). Please reduce the length of "
        "the messages or completion."
    )
    status, _, _ = post(shared_sim.v1 + "/completions", {"prompt": 5})
    assert status == 400
    with pytest.raises(openai.NotFoundError):
        client(shared_sim).completions.create(model="nope", prompt="x")
    after = metric(shared_sim, "turnbench_sim_requests_total", outcome="error")
    assert after - before == 8


def test_models_health_tokenize(shared_sim: SimProcess) -> None:
    models = client(shared_sim).models.list()
    assert [m.id for m in models.data] == ["turnbench-sim"]
    assert json.loads(get(shared_sim.v1 + "/models"))["data"][0]["max_model_len"] == 8192
    assert get(shared_sim.url + "/health") == b""
    msgs = messages(20, 5)
    status, _, body = post(shared_sim.url + "/tokenize", {"messages": msgs})
    out = json.loads(body)
    assert status == 200 and out["count"] == count_chat_tokens(msgs) == len(out["tokens"])
    assert out["max_model_len"] == 8192
    _, _, body = post(
        shared_sim.url + "/tokenize", {"messages": msgs, "add_generation_prompt": False}
    )
    assert json.loads(body)["count"] == count_chat_tokens(msgs) - 2
    _, _, body = post(shared_sim.url + "/tokenize", {"prompt": "Hello, world!"})
    hello = json.loads(body)
    assert hello["count"] == 4 and hello["tokens"][1] != hello["tokens"][0]


def test_session_header_and_metrics_move(shared_sim: SimProcess) -> None:
    gen0 = metric(shared_sim, "vllm:generation_tokens_total")
    ok0 = metric(shared_sim, "turnbench_sim_requests_total", outcome="ok")
    body = {"prompt": "count me", "max_tokens": 5, "ignore_eos": True}
    for _ in range(3):
        assert post(shared_sim.v1 + "/completions", body, {"X-Session-ID": "s-42"})[0] == 200
    assert metric(shared_sim, "turnbench_sim_session_requests_total", session="s-42") == 3
    assert metric(shared_sim, "vllm:generation_tokens_total") - gen0 == 15
    assert metric(shared_sim, "turnbench_sim_requests_total", outcome="ok") - ok0 == 3
    assert metric(shared_sim, "vllm:request_success_total", finished_reason="length") >= 3
    assert metric(shared_sim, "vllm:time_to_first_token_seconds_count") >= 3
    assert metric(shared_sim, "vllm:prompt_tokens_total") >= 6
    text = get(shared_sim.url + "/metrics").decode()
    assert re.search(r'^vllm:kv_cache_usage_perc\{model_name="turnbench-sim"\} ', text, re.M)


SHARED_FIXTURE = [HealthCheck.function_scoped_fixture]  # the module-scoped sim is safe to share
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["model", "messages", "prompt", "max_tokens", "stream", "stop", "min_tokens", "ignore_eos",
     "seed", "stream_options", "temperature", "tools", "user", "metadata", "n"]
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(FIELDS, JSON, max_size=6),
    chat=st.booleans(),
    messages_ok=st.booleans(),
)
def test_fuzzed_bodies_never_500(
    shared_sim: SimProcess, body: dict[str, Any], chat: bool, messages_ok: bool
) -> None:
    if messages_ok:
        body["messages" if chat else "prompt"] = (
            [{"role": "user", "content": "fuzz"}] if chat else "fuzz"
        )
        if isinstance(body.get("max_tokens"), int):
            body["max_tokens"] = min(abs(body["max_tokens"]), 50)
    path = "/chat/completions" if chat else "/completions"
    status, _, raw = post(shared_sim.v1 + path, body)
    assert status in (200, 400, 404), raw
    if status != 200:
        assert "message" in json.loads(raw)["error"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    msgs=st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["system", "user", "assistant"]),
                "content": st.text(max_size=60),
            }
        ),
        min_size=1,
        max_size=4,
    )
)
def test_tokenize_matches_template(shared_sim: SimProcess, msgs: list[dict[str, str]]) -> None:
    status, _, raw = post(shared_sim.url + "/tokenize", {"messages": msgs})
    assert status == 200 and json.loads(raw)["count"] == count_chat_tokens(msgs)
