"""`POST /responses`: OpenAI's Responses API, stateless or chained by `previous_response_id`.

Why two modes (`target.responses_state`): `stateless` sends the whole conversation as `input`
every turn (with `store: false`), as chat completions does, so the two compare on equal terms;
`chained` sends only the turn's new input and names the previous reply by its id, so the
server holds the history, as agents built on the Responses API run. The session keeps its
local history either way (context estimates, the ideal prefix cache); the server's usage
gives the token counts.

The history's OpenAI chat messages map to input items: the system prompt becomes
`instructions` (sent every turn: a chain does not carry them over), user and assistant
messages become message items, an assistant's `tool_calls` become `function_call` items and a
`tool` message a `function_call_output`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from turnbench.client.apis.base import (
    Reply,
    RequestView,
    StreamError,
    bearer,
    decode_read,
    error_text,
    event_error_text,
    int_or_none,
)
from turnbench.client.attempt import Attempt
from turnbench.workload.conversation import Message

_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}
"""`incomplete_details.reason` in OpenAI chat's finish reasons."""


class _Item(msgspec.Struct, gc=False):
    type: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None


class _Response(msgspec.Struct, gc=False):
    id: str | None = None
    status: str | None = None
    usage: dict[str, Any] | None = None
    error: Any = None
    incomplete_details: dict[str, Any] | None = None


class Event(msgspec.Struct, gc=False):
    """The fields of a Responses stream event turnbench reads; every other is skipped."""

    type: str = ""
    delta: str | None = None
    """Text of `response.output_text.delta`, arguments of `...function_call_arguments.delta`."""
    response: _Response | None = None
    output_index: int = 0
    item: _Item | None = None
    message: str | None = None
    """Of an `error` event."""
    code: str | None = None


_decode_one = msgspec.json.Decoder(Event).decode
_decode_array = msgspec.json.Decoder(list[Event]).decode


def text_of(content: object) -> str:
    """A message's content as text: a string, or the text of its parts joined."""
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _items(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Chat messages (system prompts excluded) as Responses input items."""
    items: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            output = text_of(m.get("content"))
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": m.get("tool_call_id", ""),
                    "output": output,
                }
            )
            continue
        text = text_of(m.get("content"))
        calls = m.get("tool_calls") if role == "assistant" else None
        if text or not calls:
            items.append({"type": "message", "role": role, "content": text})
        for call in calls or ():
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id", ""),
                    "name": function.get("name", ""),
                    "arguments": function.get("arguments") or "{}",
                }
            )
    return items


def _tools(tools: list[Message]) -> list[dict[str, Any]]:
    """Chat's `{"type": "function", "function": {...}}` as Responses' flat function tools."""
    out = []
    for tool in tools:
        function = tool.get("function")
        out.append({"type": "function", **function} if isinstance(function, dict) else tool)
    return out


class ResponsesApi:
    """Responses: typed stream events, ended by `response.completed` (or `.incomplete`)."""

    name = "responses"
    path = "/responses"
    end_event = "response.completed"

    def __init__(self, chained: bool = False) -> None:
        """`chained`: send only new input after the first turn (`target.responses_state`)."""
        self.chained = chained

    def auth(self, key: str) -> dict[str, str]:
        """`Authorization: Bearer`."""
        return bearer(key)

    def request(self, view: RequestView) -> dict[str, Any]:
        """The streamed body: `instructions`, `input` (whole, or new since `previous_id`)."""
        system = [m for m in view.messages if m.get("role") in ("system", "developer")]
        chained = self.chained and view.previous_id is not None
        sent = view.new_messages if chained else view.messages
        body: dict[str, Any] = {
            "model": view.model,
            "input": _items(m for m in sent if m.get("role") not in ("system", "developer")),
            "max_output_tokens": view.max_tokens,
            "stream": True,
        }
        if system:
            body["instructions"] = "\n\n".join(text_of(m.get("content")) for m in system)
        if chained:
            body["previous_response_id"] = view.previous_id
        elif not self.chained:
            body["store"] = False  # nothing will name this response again
        if view.tools:
            body["tools"] = _tools(view.tools)
        body.update(view.extra)
        return body

    def read(self, events: bytes, reply: Reply) -> int:
        """Read text and function-call deltas, the final response (id, usage, status) and
        errors (`error`, `response.failed`)."""
        got = 0
        parts = reply.text_parts
        for event in decode_read(events, _decode_array, _decode_one, reply, named=True):
            kind = event.type
            if kind == "response.output_text.delta":
                if event.delta:
                    parts.append(event.delta)
                    got += 1
            elif kind == "response.function_call_arguments.delta":
                got += 1
            elif kind == "response.output_item.done":
                self._tool_call(event, reply)
            elif kind in ("response.completed", "response.incomplete"):
                self._final(event.response, reply)
            elif kind == "response.created":
                if event.response is not None:
                    reply.response_id = event.response.id
            elif kind == "response.failed":
                failed = event.response
                raise StreamError(event_error_text(failed.error if failed else None))
            elif kind == "error":
                raise StreamError(event.message or event.code or "error event")
        return got

    @staticmethod
    def _tool_call(event: Event, reply: Reply) -> None:
        item = event.item
        if item is None or item.type != "function_call":
            return
        reply.tool_calls[event.output_index] = {
            "id": item.call_id or "",
            "type": "function",
            "function": {"name": item.name or "", "arguments": item.arguments or ""},
        }

    @staticmethod
    def _final(response: _Response | None, reply: Reply) -> None:
        reply.ended = True
        if response is None:
            return
        reply.response_id = response.id or reply.response_id
        reply.usage = response.usage
        if response.status == "incomplete":
            reason = (response.incomplete_details or {}).get("reason")
            reply.finish_reason = _FINISH.get(str(reason), "length")
        else:
            reply.finish_reason = "tool_calls" if reply.tool_calls else "stop"

    def usage(self, reply: Reply, att: Attempt) -> bool:
        """`input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`."""
        usage = reply.usage
        if not usage:
            return False
        att.prompt_tokens = int_or_none(usage.get("input_tokens"))
        att.completion_tokens = int_or_none(usage.get("output_tokens"))
        details = usage.get("input_tokens_details")
        att.cached_tokens = (
            int_or_none(details.get("cached_tokens")) if isinstance(details, dict) else None
        )
        return True

    def error(self, body: str) -> str:
        """`error.message` of OpenAI's error body."""
        return error_text(body)
