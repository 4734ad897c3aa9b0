"""`POST /messages`: Anthropic's Messages API.

Why the history is mapped here: sessions keep OpenAI-style chat messages (what every workload
source produces), and the Messages API differs in shape, not in meaning: the system prompt is
the top-level `system`; an assistant's `tool_calls` are `tool_use` content blocks (arguments as
a JSON object `input`); a `tool` message is a `tool_result` block in a user message; messages
of one role in a row are merged, as the API wants user and assistant to alternate.
`max_tokens` is always sent (the API requires it). Prompt caching is explicit:
`cache_control: {"type": "ephemeral"}` breakpoints go where `target.cache_control` says
(`system`: the system prompt, `tools`: the last tool, `last`: the latest message's last block).

Usage: Anthropic splits the prompt into `input_tokens` (after the last breakpoint),
`cache_read_input_tokens` and `cache_creation_input_tokens`; turnbench's prompt tokens are
their sum and its cached tokens the cache reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, get_args

import msgspec

from turnbench.client.apis.base import (
    Reply,
    RequestView,
    StreamError,
    decode_read,
    error_text,
    event_error_text,
    int_or_none,
)
from turnbench.client.apis.responses import text_of
from turnbench.client.attempt import Attempt
from turnbench.config import CachePoint
from turnbench.workload.conversation import Message

CACHE_POINTS = get_args(CachePoint)
_EPHEMERAL = {"type": "ephemeral"}
_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
"""Anthropic's `stop_reason` in OpenAI chat's finish reasons."""
_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class _Message(msgspec.Struct, gc=False):
    usage: dict[str, Any] | None = None


class _Delta(msgspec.Struct, gc=False):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Block(msgspec.Struct, gc=False):
    type: str | None = None
    id: str | None = None
    name: str | None = None


class Event(msgspec.Struct, gc=False):
    """The fields of a Messages stream event turnbench reads; every other is skipped."""

    type: str = ""
    index: int = 0
    delta: _Delta | None = None
    message: _Message | None = None
    usage: dict[str, Any] | None = None
    content_block: _Block | None = None
    error: Any = None


_decode_one = msgspec.json.Decoder(Event).decode
_decode_array = msgspec.json.Decoder(list[Event]).decode


def _arguments(text: object) -> dict[str, Any]:
    """A tool call's JSON arguments as the object `tool_use.input` wants ({} when not one)."""
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _blocks(message: Message, call_ids: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """A chat message as its Anthropic role and content blocks; `call_ids` are the tool calls
    not answered yet, oldest first (a `tool` message without `tool_call_id` answers the next)."""
    role = message.get("role")
    text = text_of(message.get("content"))
    if role == "tool":
        wanted = message.get("tool_call_id")
        if isinstance(wanted, str) and wanted in call_ids:
            call_ids.remove(wanted)
        else:
            wanted = call_ids.pop(0) if call_ids else ""
        return "user", [{"type": "tool_result", "tool_use_id": wanted, "content": text}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    if role == "assistant":
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            call_id = str(call.get("id") or f"call_{len(call_ids)}")
            call_ids.append(call_id)
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call_id,
                    "name": function.get("name", ""),
                    "input": _arguments(function.get("arguments")),
                }
            )
        return "assistant", blocks
    return "user", blocks


def to_messages(history: Iterable[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """The system texts and the Messages API's messages of a chat history (see the module)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    call_ids: list[str] = []
    for message in history:
        if message.get("role") in ("system", "developer"):
            system.append(text_of(message.get("content")))
            continue
        role, blocks = _blocks(message, call_ids)
        if not blocks:
            blocks = [{"type": "text", "text": "..."}]  # the API refuses empty content
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _tools(tools: list[Message]) -> list[dict[str, Any]]:
    """Chat's function schemas as Anthropic tools (`name`, `description`, `input_schema`)."""
    out = []
    for tool in tools:
        inner = tool.get("function")
        function: dict[str, Any] = inner if isinstance(inner, dict) else tool
        entry: dict[str, Any] = {
            "name": function.get("name", ""),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        out.append(entry)
    return out


class AnthropicApi:
    """Messages: `message_start`, content block events, `message_delta`, `message_stop`."""

    name = "anthropic"
    path = "/messages"
    end_event = "message_stop"

    def __init__(
        self, cache_control: Sequence[str] = CACHE_POINTS, version: str = "2023-06-01"
    ) -> None:
        """`cache_control`: where breakpoints go (`config.CachePoint`); `version`: the
        `anthropic-version` header."""
        self.cache_points = frozenset(cache_control)
        self.version = version

    def auth(self, key: str) -> dict[str, str]:
        """`x-api-key` and `anthropic-version`."""
        return {"x-api-key": key, "anthropic-version": self.version}

    def request(self, view: RequestView) -> dict[str, Any]:
        """The streamed body: `system`, `messages`, `tools`, `max_tokens`, breakpoints."""
        points = self.cache_points
        system, messages = to_messages(view.messages)
        body: dict[str, Any] = {"model": view.model, "max_tokens": view.max_tokens}
        if system:
            block: dict[str, Any] = {"type": "text", "text": "\n\n".join(system)}
            if "system" in points:
                block["cache_control"] = _EPHEMERAL
            body["system"] = [block]
        if messages and "last" in points:
            messages[-1]["content"][-1]["cache_control"] = _EPHEMERAL
        body["messages"] = messages
        if view.tools:
            tools = _tools(view.tools)
            if "tools" in points:
                tools[-1]["cache_control"] = _EPHEMERAL
            body["tools"] = tools
        body["stream"] = True
        extra = dict(view.extra)
        user = extra.pop("user", None)
        metadata = extra.pop("metadata", None)
        if user is not None or isinstance(metadata, dict):
            who = user if user is not None else metadata.get("session_id")
            body["metadata"] = {"user_id": str(who)}  # the one metadata field the API takes
        body.update(extra)
        return body

    def read(self, events: bytes, reply: Reply) -> int:
        """Read text and tool-input deltas, the usage of `message_start` and `message_delta`,
        the stop reason, `message_stop` and `error` events."""
        got = 0
        parts = reply.text_parts
        for event in decode_read(events, _decode_array, _decode_one, reply, named=True):
            kind = event.type
            if kind == "content_block_delta":
                delta = event.delta
                if delta is None:
                    continue
                if delta.text:
                    parts.append(delta.text)
                    got += 1
                elif delta.partial_json is not None:
                    call = reply.tool_calls.get(event.index)
                    if call is not None:
                        call["function"]["arguments"] += delta.partial_json
                    got += 1
            elif kind == "content_block_start":
                self._block(event, reply)
            elif kind == "message_start":
                if event.message is not None and event.message.usage:
                    reply.usage = dict(event.message.usage)
            elif kind == "message_delta":
                self._delta(event, reply)
            elif kind == "message_stop":
                reply.ended = True
            elif kind == "error":
                raise StreamError(event_error_text(event.error))
        return got

    @staticmethod
    def _block(event: Event, reply: Reply) -> None:
        block = event.content_block
        if block is None or block.type != "tool_use":
            return
        reply.tool_calls[event.index] = {
            "id": block.id or "",
            "type": "function",
            "function": {"name": block.name or "", "arguments": ""},
        }

    @staticmethod
    def _delta(event: Event, reply: Reply) -> None:
        """The stop reason, and the usage so far (`output_tokens` cumulative; newer servers
        repeat the prompt's fields too): it updates the usage of `message_start`."""
        if event.delta is not None and event.delta.stop_reason:
            reason = event.delta.stop_reason
            reply.finish_reason = _STOP.get(reason, reason)
        if event.usage:
            usage = reply.usage if reply.usage is not None else {}
            usage.update({k: v for k, v in event.usage.items() if v is not None})
            reply.usage = usage

    def usage(self, reply: Reply, att: Attempt) -> bool:
        """Prompt = input + cache reads + cache writes; cached = cache reads."""
        usage = reply.usage
        if not usage:
            return False
        uncached, output, read, written = (int_or_none(usage.get(k)) for k in _USAGE_KEYS)
        att.completion_tokens = output
        att.cached_tokens = read
        if uncached is not None:
            att.prompt_tokens = uncached + (read or 0) + (written or 0)
        return True

    def error(self, body: str) -> str:
        """`error.type: error.message` of Anthropic's error body."""
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            data = None
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("type") and err.get("message"):
            return f"{err['type']}: {error_text(body)}"
        return error_text(body)
