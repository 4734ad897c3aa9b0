"""The simulator as other tools meet it: their session headers, and vLLM's per-chunk usage
(`stream_options.continuous_usage_stats`). Real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import SimProcess, start_sim
from turnbench.errors import InputError
from turnbench.sim.config import SESSION_HEADERS, load_config
from turnbench.tokens.template import count_chat_tokens, count_tokens


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimProcess]:
    """One zero-delay simulator with the default session headers."""
    s = start_sim("--zero-delay")
    yield s
    s.stop()


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers or {}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return resp.read()


def session_counts(sim: SimProcess) -> dict[tuple[str, str], float]:
    """`turnbench_sim_session_requests_total` as {(header, session): requests}."""
    with urllib.request.urlopen(sim.url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("turnbench_sim_session_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            fields = dict(kv.split("=", 1) for kv in labels.split("{", 1)[1][:-1].split(","))
            counts[fields["header"].strip('"'), fields["session"].strip('"')] = float(value)
    return counts


def complete(sim: SimProcess, headers: dict[str, str]) -> None:
    post(sim.v1 + "/completions", {"prompt": "hi", "max_tokens": 2}, headers)


def test_common_session_headers_are_counted_by_default(shared_sim: SimProcess) -> None:
    for _ in range(2):
        complete(shared_sim, {"X-Correlation-ID": "aiperf-conv-1"})  # AIPerf's header
    complete(shared_sim, {"X-Dynamo-Session-ID": "dyn-1"})
    complete(shared_sim, {"x-smg-routing-key": "smg-1"})  # header names are case-insensitive
    complete(shared_sim, {"X-Correlation-ID": "ignored", "X-Session-ID": "tb-1"})  # order wins
    counts = session_counts(shared_sim)
    assert counts[("X-Correlation-ID", "aiperf-conv-1")] == 2
    assert counts[("X-Dynamo-Session-ID", "dyn-1")] == 1
    assert counts[("X-SMG-Routing-Key", "smg-1")] == 1
    assert counts[("X-Session-ID", "tb-1")] == 1
    assert ("X-Correlation-ID", "ignored") not in counts


def test_session_header_flag_replaces_the_defaults() -> None:
    sim = start_sim(
        "--zero-delay", "--session-header", "X-Trace-Key", "--session-header", "X-Correlation-ID"
    )
    try:
        complete(sim, {"X-Session-ID": "not-listed"})
        complete(sim, {"X-Correlation-ID": "c-1", "X-Trace-Key": "t-1"})
        complete(sim, {"X-Correlation-ID": "c-1"})
        assert session_counts(sim) == {("X-Trace-Key", "t-1"): 1, ("X-Correlation-ID", "c-1"): 1}
    finally:
        sim.stop()


def test_session_header_set_forms() -> None:
    assert load_config().session_header == list(SESSION_HEADERS)
    assert load_config(sets=["session_header=X-Foo"]).session_header == ["X-Foo"]
    assert load_config(sets=["session_header=[X-A, X-B]"]).session_header == ["X-A", "X-B"]
    with pytest.raises(InputError, match="session_header"):
        load_config(sets=["session_header=[]"])


def stream(sim: SimProcess, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a streamed request; return every chunk's JSON (the `[DONE]` event checked)."""
    raw = post(sim.v1 + path, {**body, "stream": True}).decode()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


MESSAGES = [{"role": "user", "content": "What is a prefix cache?"}]
CHAT = ("/chat/completions", {"messages": MESSAGES}, count_chat_tokens(MESSAGES))
COMPLETIONS = (
    "/completions",
    {"prompt": "Tell me about caches"},
    count_tokens("Tell me about caches"),
)


@pytest.mark.parametrize(("path", "body", "n_prompt"), [CHAT, COMPLETIONS], ids=["chat", "cmpl"])
@pytest.mark.parametrize(
    "options",
    [{"include_usage": True, "continuous_usage_stats": True}, {"continuous_usage_stats": True}],
)
def test_continuous_usage_on_every_chunk(
    shared_sim: SimProcess, path: str, body: dict[str, Any], n_prompt: int, options: dict
) -> None:
    chunks = stream(
        shared_sim, path, {**body, "max_tokens": 6, "ignore_eos": True, "stream_options": options}
    )
    *running, last = chunks
    assert all(c["usage"] is not None for c in chunks)
    produced = 0
    for chunk in running:
        choice = chunk["choices"][0]
        produced += bool(choice.get("text") or choice.get("delta", {}).get("content"))
        assert chunk["usage"] == {
            "prompt_tokens": n_prompt,
            "completion_tokens": produced,
            "total_tokens": n_prompt + produced,
        }
    assert produced == 6
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 6
    assert last["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


@pytest.mark.parametrize(("path", "body", "n_prompt"), [CHAT, COMPLETIONS], ids=["chat", "cmpl"])
@pytest.mark.parametrize(
    ("options", "final_usage"),
    [
        (None, False),
        ({"include_usage": False, "continuous_usage_stats": True}, False),
        ({"include_usage": True}, True),
        ({}, True),  # vLLM reads a stream_options object as include_usage: true
    ],
)
def test_usage_only_where_asked(
    shared_sim: SimProcess,
    path: str,
    body: dict[str, Any],
    n_prompt: int,
    options: dict | None,
    final_usage: bool,
) -> None:
    extra = {} if options is None else {"stream_options": options}
    chunks = stream(shared_sim, path, {**body, "max_tokens": 4, **extra})
    with_usage = [c for c in chunks if c.get("usage")]
    if final_usage:
        assert with_usage == [chunks[-1]] and chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["prompt_tokens"] == n_prompt
    else:
        assert with_usage == []
