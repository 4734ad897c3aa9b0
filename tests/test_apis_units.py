"""Each API module on its own: request bodies from a chat history, stream events read a read at
a time (events in the shapes real servers send: llama.cpp's, the simulator's), usage fields,
error events and bodies. No server: these are the modules' pure parts; test_apis.py runs them
against the simulator over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from turnbench.client.apis import API_NAMES, api_for
from turnbench.client.apis.anthropic import AnthropicApi, to_messages
from turnbench.client.apis.base import Malformed, Reply, RequestView, StreamError
from turnbench.client.apis.chat import ChatApi
from turnbench.client.apis.responses import ResponsesApi
from turnbench.client.attempt import Attempt
from turnbench.config import TargetConfig

HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "You book flights."},
    {"role": "user", "content": "Book me a seat."},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "find", "arguments": '{"from": "JFK"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "price", "arguments": ""}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "HAT136"},
    {"role": "tool", "content": "250 USD"},
    {"role": "user", "content": "Yes, book it."},
]
TOOLS = [
    {"type": "function", "function": {"name": "find", "description": "Find", "parameters": {}}}
]


def _view(**kw: Any) -> RequestView:
    args: dict[str, Any] = {
        "model": "m",
        "messages": HISTORY,
        "new_messages": HISTORY[-1:],
        "max_tokens": 32,
        "tools": TOOLS,
    }
    return RequestView(**{**args, **kw})


def _sse(*events: tuple[str | None, dict[str, Any] | str]) -> bytes:
    """SSE text of (event name or None, payload) pairs."""
    out = b""
    for name, data in events:
        head = f"event: {name}\n".encode() if name else b""
        body = data if isinstance(data, str) else json.dumps(data)
        out += head + b"data: " + body.encode() + b"\n\n"
    return out


def _attempt() -> Attempt:
    return Attempt("main", 0, "s", "c", 1, 1, 0)


def test_the_config_names_every_registered_api() -> None:
    assert set(TargetConfig.model_fields["api"].annotation.__args__) == set(API_NAMES)  # type: ignore[union-attr]
    for name in API_NAMES:
        assert api_for(TargetConfig(api=name)).name == name  # type: ignore[arg-type]


def test_auth_headers_per_api() -> None:
    assert ChatApi().auth("k") == {"Authorization": "Bearer k"}
    assert AnthropicApi(version="2024-01-01").auth("k") == {
        "x-api-key": "k",
        "anthropic-version": "2024-01-01",
    }


def test_anthropic_maps_system_tool_calls_and_results() -> None:
    system, messages = to_messages(HISTORY)
    assert system == ["You book flights."]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]  # alternating
    uses = messages[1]["content"]
    assert [b["type"] for b in uses] == ["tool_use", "tool_use"]  # no empty text block
    assert uses[0] == {"type": "tool_use", "id": "call_1", "name": "find", "input": {"from": "JFK"}}
    assert uses[1]["input"] == {}
    results = messages[2]["content"]
    assert results[0] == {"type": "tool_result", "tool_use_id": "call_1", "content": "HAT136"}
    assert results[1]["tool_use_id"] == "call_2"  # a result without an id answers the next call
    assert results[2] == {"type": "text", "text": "Yes, book it."}  # merged into one user turn


@pytest.mark.parametrize(
    ("points", "where"),
    [
        (("system", "tools", "last"), {"system", "tools", "last"}),
        (("last",), {"last"}),
        ((), set()),
    ],
)
def test_anthropic_cache_control_breakpoints(points: tuple[str, ...], where: set[str]) -> None:
    body = AnthropicApi(points).request(_view(extra={"user": "s1"}))
    marked = {
        "system": "cache_control" in body["system"][-1],
        "tools": "cache_control" in body["tools"][-1],
        "last": "cache_control" in body["messages"][-1]["content"][-1],
    }
    assert {k for k, v in marked.items() if v} == where
    assert body["max_tokens"] == 32 and body["stream"] is True
    assert body["metadata"] == {"user_id": "s1"} and "user" not in body
    tool = body["tools"][0]
    assert tool["name"] == "find" and tool["description"] == "Find"
    assert tool["input_schema"] == {"type": "object", "properties": {}}  # the API wants one
    assert not any("cache_control" in b for m in to_messages(HISTORY)[1] for b in m["content"])


def test_responses_stateless_sends_everything_and_chained_only_the_new_input() -> None:
    whole = ResponsesApi().request(_view())
    assert whole["instructions"] == "You book flights." and whole["store"] is False
    kinds = [i["type"] for i in whole["input"]]
    assert kinds == [
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "message",
    ]
    assert whole["input"][1]["call_id"] == "call_1" and whole["max_output_tokens"] == 32
    assert whole["tools"] == [
        {"type": "function", "name": "find", "description": "Find", "parameters": {}}
    ]
    chained = ResponsesApi(chained=True)
    first = chained.request(_view(previous_id=None))
    assert first["input"] == whole["input"] and "previous_response_id" not in first
    assert "store" not in first  # stored: the next turn names it
    later = chained.request(_view(previous_id="resp_1"))
    assert later["previous_response_id"] == "resp_1"
    assert later["input"] == [{"type": "message", "role": "user", "content": "Yes, book it."}]
    assert later["instructions"] == "You book flights."  # not carried over a chain


def test_chat_reads_a_stream_split_anywhere() -> None:
    chunks = [{"choices": [{"delta": {"content": w}}]} for w in ("a", "b", "c")]
    usage = {
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    text = _sse(
        *((None, c) for c in chunks), (None, {"choices": [], "usage": usage}), (None, "[DONE]")
    )
    api, reply, got = ChatApi(), Reply(), 0
    cut = len(text) // 2
    cut = text.rindex(b"\n\n", 0, cut) + 2  # the parser hands over whole events only
    for part in (text[:cut], text[cut:]):
        got += api.read(part, reply)
    assert (got, reply.text, reply.ended) == (3, "abc", True)
    att = _attempt()
    assert api.usage(reply, att)
    assert (att.prompt_tokens, att.completion_tokens, att.cached_tokens) == (9, 3, 4)


def test_responses_events_as_llama_cpp_sends_them() -> None:
    rid = "resp_glbk"
    text = _sse(
        (
            "response.created",
            {"type": "response.created", "response": {"id": rid, "status": "in_progress"}},
        ),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "hel"}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "lo"}),
        (
            "response.completed",
            {
                "type": "response.completed",
                "response": {
                    "id": rid,
                    "status": "completed",
                    "usage": {
                        "input_tokens": 14,
                        "output_tokens": 2,
                        "input_tokens_details": {"cached_tokens": 8},
                    },
                },
            },
        ),
    )
    api, reply = ResponsesApi(), Reply()
    assert api.read(text, reply) == 2
    assert (reply.text, reply.ended, reply.response_id, reply.finish_reason) == (
        "hello",
        True,
        rid,
        "stop",
    )
    att = _attempt()
    api.usage(reply, att)
    assert (att.prompt_tokens, att.completion_tokens, att.cached_tokens) == (14, 2, 8)


def test_responses_function_calls_and_incomplete() -> None:
    item = {"type": "function_call", "call_id": "c9", "name": "find", "arguments": "{}"}
    text = _sse(
        ("x", {"type": "response.function_call_arguments.delta", "delta": "{}"}),
        ("x", {"type": "response.output_item.done", "output_index": 0, "item": item}),
        (
            "x",
            {
                "type": "response.incomplete",
                "response": {
                    "status": "incomplete",
                    "incomplete_details": {"reason": "max_output_tokens"},
                },
            },
        ),
    )
    reply = Reply()
    assert ResponsesApi().read(text, reply) == 1
    assert reply.message()["tool_calls"] == [
        {"id": "c9", "type": "function", "function": {"name": "find", "arguments": "{}"}}
    ]
    assert reply.finish_reason == "length" and reply.ended


@pytest.mark.parametrize(
    "event",
    [
        {"type": "error", "code": "server_error", "message": "boom"},
        {
            "type": "response.failed",
            "response": {"status": "failed", "error": {"code": "x", "message": "boom"}},
        },
    ],
)
def test_responses_error_events(event: dict[str, Any]) -> None:
    with pytest.raises(StreamError, match="boom"):
        ResponsesApi().read(_sse((event["type"], event)), Reply())


def test_anthropic_stream_usage_sums_the_prompt_parts() -> None:
    start = {
        "type": "message_start",
        "message": {
            "usage": {"input_tokens": 1, "cache_read_input_tokens": 21, "output_tokens": 0}
        },
    }
    text = _sse(
        ("message_start", start),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "tu1", "name": "find"},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "1}"},
            },
        ),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 3, "cache_creation_input_tokens": 16},
            },
        ),
    )
    api, reply = AnthropicApi(), Reply()
    assert api.read(text, reply) == 3
    assert not reply.ended
    assert api.read(_sse(("message_stop", {"type": "message_stop"})), reply) == 0 and reply.ended
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls[1]["function"] == {"name": "find", "arguments": '{"a":1}'}
    att = _attempt()
    api.usage(reply, att)
    assert (att.prompt_tokens, att.completion_tokens, att.cached_tokens) == (1 + 21 + 16, 3, 21)


def test_anthropic_error_event_and_body() -> None:
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(StreamError, match="Overloaded"):
        AnthropicApi().read(_sse(("error", err)), Reply())
    assert AnthropicApi().error(json.dumps(err)) == "overloaded_error: Overloaded"
    assert AnthropicApi().error("<html>bad gateway</html>") == "<html>bad gateway</html>"


@pytest.mark.parametrize("name", API_NAMES)
def test_a_bad_payload_is_named(name: str) -> None:
    api = api_for(TargetConfig(api=name))  # type: ignore[arg-type]
    with pytest.raises(Malformed, match="not json"):
        api.read(b"event: x\ndata: {not json\n\n", Reply())


def _delta(text: str, head: str = "event: x\n", data: str = "data: ") -> str:
    """One Responses text delta event as SSE text."""
    payload = json.dumps({"type": "response.output_text.delta", "delta": text})
    return f"{head}{data}{payload}\n\n"


@pytest.mark.parametrize(
    "block",
    [
        # the usual shape: one decode for the whole read
        _delta("a") + _delta("b") + _delta("c"),
        # shapes that take the line-by-line path: an event without its event line, a data
        # line without the space, a comment, an event of two data lines
        _delta("a") + _delta("b", head="") + _delta("c"),
        _delta("a", data="data:") + _delta("b") + _delta("c"),
        ": keep-alive\n\n" + _delta("a") + _delta("b") + _delta("c"),
        'event: x\ndata: {"type": "response.output_text.delta",\ndata: "delta": "abc"}\n\n',
    ],
)
def test_named_events_decode_in_every_shape(block: str) -> None:
    reply = Reply()
    ResponsesApi().read(block.encode(), reply)
    assert reply.text == "abc"


def test_named_events_fast_path_is_taken_for_the_usual_shape() -> None:
    from turnbench.client.apis.responses import _decode_array
    from turnbench.client.sse import decode_named_events

    block = "".join(_delta(w) for w in "abc").encode()
    decoded = decode_named_events(block, _decode_array)
    assert decoded is not None and [e.delta for e in decoded[0]] == ["a", "b", "c"]
    mixed = (_delta("a") + _delta("b", head="") + _delta("c")).encode()
    assert decode_named_events(mixed, _decode_array) is None


def test_token_counts_and_plans_import_no_transport() -> None:
    """ARCHITECTURE.md's direction: `tokens/`, `workload/` and `pacing/` import nothing of the
    client (its transport, its API modules), so the workload can be read with no HTTP."""
    import ast
    from pathlib import Path

    import turnbench

    root = Path(turnbench.__file__).parent
    found = []
    for package in ("tokens", "workload", "pacing"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                found += [f"{path.name}: {n}" for n in names if n.startswith("turnbench.client")]
    assert not found
