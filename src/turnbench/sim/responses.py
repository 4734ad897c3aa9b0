"""`POST /v1/responses`: OpenAI's Responses API, stateless and chained by `previous_response_id`.

Why the whole conversation is rendered with the chat template: a Responses turn must meet the
prefix cache, the batch, the timing model and the faults exactly as the same conversation sent
to chat completions would, so the two APIs can be compared on one simulator. A chained turn's
prompt is `instructions` (a system message; OpenAI does not carry them over a chain), then the
stored conversation of the previous response (its input items and its reply), then the new
input; with the same instructions every turn, its prefix is the previous turn's prompt and reply.
"""

from __future__ import annotations

import time
from collections import OrderedDict
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
from turnbench.sim.sse import MALFORMED, json_str, new_id
from turnbench.sim.textgen import Reply
from turnbench.sim.wire import Usage
from turnbench.tokens.template import render_chat

Message = dict[str, Any]
"""A chat message as the template renders it: role, content text, optional tool calls."""
Conversation = tuple[Message, ...]

ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text")
_HEAD_EVENTS = 4
"""Events before the first delta: created, in_progress, output_item.added, content_part.added."""

_encode = msgspec.json.encode


class ResponseStore:
    """Stored responses' conversations by id; the least recently used is dropped first.

    Why each entry holds its whole conversation rather than a link to the previous response:
    dropping an old turn must not break the chains that run through it. The message dicts are
    shared between entries, so a chain of n turns holds n tuples of references, not n copies of
    the texts.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, Conversation] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, response_id: str) -> Conversation | None:
        """The conversation of a stored response (touched as most recently used), or None."""
        conversation = self._entries.get(response_id)
        if conversation is not None:
            self._entries.move_to_end(response_id)
        return conversation

    def put(self, response_id: str, conversation: Conversation) -> None:
        """Keep a response's conversation, dropping the least recently used beyond capacity."""
        if self.capacity <= 0:
            return
        self._entries[response_id] = conversation
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def _text(content: object, where: str) -> str:
    """The text of a content field: a string, or a list of text parts joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content parts", param="input")
    texts: list[str] = []
    for j, part in enumerate(content):
        if (
            not isinstance(part, dict)
            or part.get("type") not in TEXT_PARTS
            or not isinstance(part.get("text"), str)
        ):
            raise RequestError(
                f"{where}[{j}] must be an input_text or output_text part with a string text",
                param="input",
            )
        texts.append(part["text"])
    return "".join(texts)


def _string(item: dict[str, Any], key: str, where: str) -> str:
    """A required string field of an input item."""
    value = item.get(key)
    if not isinstance(value, str):
        raise RequestError(f"{where}.{key} must be a string", param="input")
    return value


def _item(item: object, where: str) -> Message:
    """One input item as a chat message: a message, or a tool call and its output.

    Why tool calls: an agent's Responses history carries `function_call` and
    `function_call_output` items; they render as chat completions renders an assistant's
    `tool_calls` and a `tool` message, so both APIs cost the same tokens (`input_messages`
    joins a call to the assistant message or calls right before it: parallel calls).
    """
    if not isinstance(item, dict):
        raise RequestError(f"{where} must be an object", param="input")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}", param="input")
        return {"role": role, "content": _text(item.get("content"), f"{where}.content")}
    if kind == "function_call":
        call = {
            "id": _string(item, "call_id", where),
            "type": "function",
            "function": {
                "name": _string(item, "name", where),
                "arguments": _string(item, "arguments", where),
            },
        }
        return {"role": "assistant", "content": "", "tool_calls": [call]}
    if kind == "function_call_output":
        _string(item, "call_id", where)
        return {"role": "tool", "content": _text(item.get("output"), f"{where}.output")}
    raise RequestError(
        f"{where}.type {kind!r} is not supported (message, function_call, function_call_output)",
        param="input",
    )


def input_messages(value: object) -> list[Message]:
    """The `input` field as chat messages: a string is one user message."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RequestError("'input' must be a string or a non-empty list of items", param="input")
    out: list[Message] = []
    for i, item in enumerate(value):
        message = _item(item, f"input[{i}]")
        last = out[-1] if out else None
        if "tool_calls" in message and last is not None and last["role"] == "assistant":
            # parallel calls (and the text before them) are one assistant turn, as in chat
            last["tool_calls"] = [*last.get("tool_calls", ()), *message["tool_calls"]]
            continue
        out.append(message)
    return out


class ResponsesApi:
    """The Responses endpoint and the server-side store `previous_response_id` reads."""

    def __init__(self, cfg: SimConfig) -> None:
        self._cfg = cfg
        self.store = ResponseStore(cfg.stored_responses)

    def parse(self, raw: bytes) -> tuple[SimRequest, ResponseWire]:
        """Validate the body and render the whole conversation, stored history included."""
        cfg = self._cfg
        body = decode_body(raw)
        check_model(body, cfg.model)
        if "input" not in body:
            raise RequestError("'input' is required", param="input")
        new = input_messages(body["input"])
        previous = opt(body, "previous_response_id", (str,), "a string")
        history: Conversation = ()
        if previous is not None:
            found = self.store.get(previous)
            if found is None:
                raise RequestError(
                    f"Previous response with id '{previous}' not found.",
                    status=404,
                    param="previous_response_id",
                    kind="invalid_request_error",
                    code="previous_response_not_found",
                )
            history = found
        instructions = opt(body, "instructions", (str,), "a string")
        conversation = (*history, *new)
        system = [{"role": "system", "content": instructions}] if instructions is not None else []
        max_tokens = opt_limit(body, "max_output_tokens")
        store = opt(body, "store", (bool,), "a boolean")
        metadata = opt(body, "metadata", (dict,), "an object")
        opt(body, "temperature", (int, float), "a number")
        opt(body, "top_p", (int, float), "a number")
        opt(body, "tools", (list,), "a list")
        opt(body, "user", (str,), "a string")
        req = rendered_request(
            render_chat([*system, *conversation]),
            max_tokens=max_tokens,
            ignore_eos=bool(opt(body, "ignore_eos", (bool,), "a boolean")),
            stream=bool(opt(body, "stream", (bool,), "a boolean")),
            max_model_len=cfg.max_model_len,
            block_size=cfg.block_size,
            where="input",
        )
        echo = {
            "instructions": instructions,
            "max_output_tokens": max_tokens,
            "metadata": metadata or {},
            "previous_response_id": previous,
            "store": store is not False,
        }
        keep = (self.store, conversation) if store is not False else None
        return req, ResponseWire(model=cfg.model, echo=echo, keep_in=keep)

    def error_body(self, err: RequestError) -> bytes:
        """OpenAI JSON: `{"error": {message, type, param, code}}`."""
        return err.body()


def _event(kind: str, seq: int, payload: dict[str, Any]) -> bytes:
    """One SSE event: the `event:` line and the JSON with its type and sequence number."""
    data = _encode({"type": kind, "sequence_number": seq, **payload})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def response_usage(usage: Usage) -> dict[str, Any]:
    """The Responses `usage` object; `cache_write_tokens` as in `wire.Usage`."""
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


class ResponseWire:
    """The `Wire` of one response: the response object, its stream events, its storing."""

    malformed = MALFORMED

    def __init__(
        self,
        *,
        model: str,
        echo: dict[str, Any],
        keep_in: tuple[ResponseStore, Conversation] | None,
    ) -> None:
        """`echo`: request fields the response object repeats; `keep_in`: the store and the
        conversation so far, or None when the request says `store: false`."""
        self.id = new_id("resp_")
        self.item_id = new_id("msg_")
        self._model = model
        self._created = int(time.time())
        self._echo = echo
        self._keep_in = keep_in
        self._delta_open = (
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            b'"sequence_number":'
        )
        self._delta_mid = (
            b',"item_id":"' + self.item_id.encode() + b'","output_index":0,"content_index":0,'
            b'"delta":'
        )

    def _object(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The response object; `incomplete` means `max_output_tokens` was reached."""
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "model": self._model,
            "output": output,
            "parallel_tool_calls": True,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "truncation": "disabled",
            "usage": usage,
            **self._echo,
        }

    def _message(self, text: str, status: str) -> dict[str, Any]:
        """The output message item holding the reply text."""
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        content = [part] if status != "in_progress" else []
        return {
            "id": self.item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _final(self, reply: Reply, usage: Usage) -> tuple[str, dict[str, Any]]:
        """The finished status and response object of a reply."""
        status = "completed" if reply.finish_reason == "stop" else "incomplete"
        message = self._message("".join(reply.pieces), status)
        return status, self._object(status, [message], response_usage(usage))

    def head(self, usage: Usage) -> list[bytes]:
        """created, in_progress, the output message added, its text part added."""
        started = self._object("in_progress", [], None)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        return [
            _event("response.created", 0, {"response": started}),
            _event("response.in_progress", 1, {"response": started}),
            _event(
                "response.output_item.added",
                2,
                {"output_index": 0, "item": self._message("", "in_progress")},
            ),
            _event("response.content_part.added", 3, {**where, "part": part}),
        ]

    def tokens(self, pieces: Sequence[str], finish_reason: str, usage: Usage) -> list[bytes]:
        """One `response.output_text.delta` per token."""
        opened, mid, end = self._delta_open, self._delta_mid, b',"logprobs":[]}\n\n'
        return [
            opened + str(seq).encode() + mid + json_str(piece) + end
            for seq, piece in enumerate(pieces, _HEAD_EVENTS)
        ]

    def tail(self, reply: Reply, usage: Usage) -> list[bytes]:
        """The text, part and item done, then `response.completed` (or `.incomplete`)."""
        status, final = self._final(reply, usage)
        message = final["output"][0]
        seq = _HEAD_EVENTS + len(reply.pieces)
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        text = message["content"][0]["text"]
        return [
            _event("response.output_text.done", seq, {**where, "text": text, "logprobs": []}),
            _event("response.content_part.done", seq + 1, {**where, "part": message["content"][0]}),
            _event("response.output_item.done", seq + 2, {"output_index": 0, "item": message}),
            _event(f"response.{status}", seq + 3, {"response": final}),
        ]

    def body(self, reply: Reply, usage: Usage) -> bytes:
        """The response object."""
        return _encode(self._final(reply, usage)[1])

    def keep(self, reply: Reply) -> None:
        """Store the conversation with this reply, for a later `previous_response_id`."""
        if self._keep_in is None:
            return
        store, conversation = self._keep_in
        reply_message = {"role": "assistant", "content": "".join(reply.pieces)}
        store.put(self.id, (*conversation, reply_message))
