"""`POST /v1/messages`: Anthropic's Messages API.

Why rendered with the chat template: a Messages conversation must meet the prefix cache, the
batch, the timing model and the faults exactly as the same conversation sent to chat
completions would. `system` is a system message; text blocks are joined; `tool_use` blocks
render after the text as compact JSON (`{"id","input","name"}`), as an assistant's `tool_calls`
do; a `tool_result` renders as its text; `thinking` and `redacted_thinking` blocks are
accepted and not rendered. `cache_control` markers are accepted and ignored: the simulator's
prefix cache is automatic, as vLLM's.

The prompt split of the usage (see `wire.Usage`): `cache_read_input_tokens` are the tokens
found in the prefix cache, `cache_creation_input_tokens` the tokens of the other full blocks
(computed and stored by this request), `input_tokens` the partial last block, which is never
cached; the three add up to the prompt, and `input_tokens` is below `block_size` whenever the
cache is on (all of the prompt when it is off).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from turnbench.sim.config import SimConfig
from turnbench.sim.protocol import (
    RequestError,
    SimRequest,
    check_model,
    decode_body,
    opt,
    opt_limit,
    rendered_request,
)
from turnbench.sim.sse import json_str, new_id
from turnbench.sim.textgen import Reply
from turnbench.sim.wire import Usage
from turnbench.tokens.template import render_chat

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
"""Anthropic's error `type` by HTTP status; the SDK picks its exception by the status."""

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}

_THINKING = {"thinking": "thinking", "redacted_thinking": "data"}
"""Thinking block types and the string field each must carry. An agent with extended thinking
sends its earlier thinking back; it is not rendered (no prompt tokens), as Anthropic drops
earlier turns' thinking from the context, and the simulator writes none of its own."""

_encode = msgspec.json.encode


def _block_texts(blocks: object, where: str) -> str:
    """The text of a `system` or `tool_result` content: a string, or text blocks joined."""
    if isinstance(blocks, str):
        return blocks
    if blocks is None:
        return ""
    if not isinstance(blocks, list):
        raise RequestError(f"{where}: expected a string or a list of text blocks")
    texts: list[str] = []
    for j, block in enumerate(blocks):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            raise RequestError(f"{where}.{j}: expected a text block with a string text")
        texts.append(block["text"])
    return "".join(texts)


def _content(content: object, where: str) -> tuple[str, list[dict[str, Any]]]:
    """A message's text and its tool calls, from a string or a list of content blocks."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(f"{where}.content: expected a string or a list of content blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_block_texts([block], at))
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise RequestError(f"{at}: tool_use needs a string id and name")
            if not isinstance(block.get("input"), dict):
                raise RequestError(f"{at}.input: expected an object")
            calls.append({"id": block["id"], "name": block["name"], "input": block["input"]})
        elif kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise RequestError(f"{at}.tool_use_id: expected a string")
            texts.append(_block_texts(block.get("content"), f"{at}.content"))
        elif kind in _THINKING:
            field = _THINKING[kind]
            if not isinstance(block.get(field), str):
                raise RequestError(f"{at}.{field}: expected a string")
        else:
            supported = "text, tool_use, tool_result, thinking, redacted_thinking"
            raise RequestError(f"{at}: block type {kind!r} is not supported ({supported})")
    return "".join(texts), calls


def chat_messages(system: object, messages: object) -> list[dict[str, Any]]:
    """`system` and `messages` as the chat messages the template renders."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: expected a non-empty list of messages")
    out: list[dict[str, Any]] = []
    if system is not None:
        out.append({"role": "system", "content": _block_texts(system, "system")})
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise RequestError(f"{where}.role: expected 'user' or 'assistant'")
        text, calls = _content(message.get("content"), where)
        rendered: dict[str, Any] = {"role": message["role"], "content": text}
        if calls:
            rendered["tool_calls"] = calls
        out.append(rendered)
    return out


class MessagesApi:
    """The Messages endpoint; `x-api-key` and `anthropic-version` are accepted, not checked."""

    def __init__(self, cfg: SimConfig) -> None:
        self._cfg = cfg

    def parse(self, raw: bytes) -> tuple[SimRequest, MessageWire]:
        """Validate the body; `max_tokens` is required, as Anthropic's API requires it."""
        cfg = self._cfg
        body = decode_body(raw)
        check_model(body, cfg.model)
        if body.get("max_tokens") is None:
            raise RequestError("max_tokens: Field required", param="max_tokens")
        max_tokens = opt_limit(body, "max_tokens")
        messages = chat_messages(body.get("system"), body.get("messages"))
        opt(body, "temperature", (int, float), "a number")
        opt(body, "metadata", (dict,), "an object")
        opt(body, "tools", (list,), "a list")
        opt(body, "tool_choice", (dict,), "an object")
        stop = opt(body, "stop_sequences", (list,), "a list of strings") or []
        if not all(isinstance(s, str) for s in stop):
            raise RequestError("stop_sequences: a list of strings", param="stop_sequences")
        req = rendered_request(
            render_chat(messages),
            max_tokens=max_tokens,
            ignore_eos=bool(opt(body, "ignore_eos", (bool,), "a boolean")),
            stream=bool(opt(body, "stream", (bool,), "a boolean")),
            max_model_len=cfg.max_model_len,
            block_size=cfg.block_size,
            where="messages",
            stop=tuple(s for s in stop if s),
        )
        return req, MessageWire(cfg.model)

    def error_body(self, err: RequestError) -> bytes:
        """Anthropic JSON: `{"type": "error", "error": {"type", "message"}}`."""
        kind = ERROR_TYPES.get(err.status, "api_error")
        return _encode({"type": "error", "error": {"type": kind, "message": err.message}})


def _stop(reply: Reply) -> tuple[str, str | None]:
    """Anthropic's `stop_reason` and `stop_sequence` of a reply."""
    if reply.stop_string is not None:
        return "stop_sequence", reply.stop_string
    return STOP_REASONS[reply.finish_reason], None


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    """One SSE event: the `event:` line and the JSON with its type."""
    return b"event: " + kind.encode() + b"\ndata: " + _encode({"type": kind, **payload}) + b"\n\n"


def message_usage(usage: Usage) -> dict[str, int]:
    """The Messages `usage` object, the prompt split as the module docstring says."""
    return {
        "input_tokens": usage.uncached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
    }


class MessageWire:
    """The `Wire` of one message: the message object and its stream events."""

    malformed = b"event: content_block_delta\ndata: {not json\n\n"
    """With an `event:` line: the SDK skips events without one, which would hide the fault."""

    _DELTA_OPEN = (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":'
    )

    def __init__(self, model: str) -> None:
        self.id = new_id("msg_")
        self._model = model

    def _object(
        self, content: list[dict[str, Any]], stop: tuple[str | None, str | None], usage: Usage
    ) -> bytes:
        """The message object (JSON), as `message_start` and the non-streaming reply hold it."""
        return _encode(
            {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self._model,
                "content": content,
                "stop_reason": stop[0],
                "stop_sequence": stop[1],
                "usage": message_usage(usage),
            }
        )

    def head(self, usage: Usage) -> list[bytes]:
        """message_start (with the prompt's usage), the text block's start, a ping."""
        started = self._object([], (None, None), usage)
        block = {"index": 0, "content_block": {"type": "text", "text": ""}}
        return [
            b'event: message_start\ndata: {"type":"message_start","message":' + started + b"}\n\n",
            _event("content_block_start", block),
            _event("ping", {}),
        ]

    def tokens(self, pieces: Sequence[str], finish_reason: str, usage: Usage) -> list[bytes]:
        """One `content_block_delta` (`text_delta`) per token."""
        opened = self._DELTA_OPEN
        return [opened + json_str(piece) + b"}}\n\n" for piece in pieces]

    def tail(self, reply: Reply, usage: Usage) -> list[bytes]:
        """The block's stop, message_delta (stop reason, cumulative usage), message_stop."""
        reason, sequence = _stop(reply)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        return [
            _event("content_block_stop", {"index": 0}),
            _event("message_delta", {"delta": delta, "usage": message_usage(usage)}),
            _event("message_stop", {}),
        ]

    def body(self, reply: Reply, usage: Usage) -> bytes:
        """The message object with its one text block."""
        content = [{"type": "text", "text": "".join(reply.pieces)}]
        return self._object(content, _stop(reply), usage)

    def keep(self, reply: Reply) -> None:
        """Nothing to keep: the client resends the whole conversation every turn."""
