"""Endpoint adapters: what an OpenAI-style request and its streamed chunks look like.

Why separate from the transport: the transport moves bytes and keeps time; an adapter knows
the API. A new API (Responses, Anthropic messages) is one more adapter here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from turnbench.tokenizer import render_chat
from turnbench.workload.conversation import Message


@dataclass(slots=True)
class Reply:
    """What the server said in one attempt, accumulated chunk by chunk."""

    text_parts: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    retry_after_s: float | None = None
    """The server's Retry-After on a 429, for the retry policy."""
    timings: dict[str, Any] | None = None
    """llama.cpp's `timings` of the last chunk that carried them."""
    captured: str | None = None
    """The router's session token, from the response header the transport was built to read
    (`session.session_token_header`)."""

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def message(self) -> Message:
        """The reply as an assistant message to append to the history."""
        msg: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return msg


class Adapter(Protocol):
    """Builds a request body and reads streamed chunks for one API."""

    path: str

    def body(self, model: str, messages: list[Message], extra: dict[str, Any]) -> dict[str, Any]:
        """The JSON body of a streamed request."""
        ...

    def fold(self, chunks: list[Chunk], reply: Reply) -> int:
        """Fold decoded chunks into `reply` in order; return how many carried output (text or
        tool calls). Raises `ErrorChunk` at a chunk that is an error event."""
        ...


class ErrorChunk(Exception):
    """A streamed chunk that carries `error` instead of output (the server failed mid-stream)."""

    def __init__(self, error: Any) -> None:
        super().__init__(error)
        self.error = error


class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct, gc=False):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct, gc=False):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct, gc=False):
    delta: _Delta | None = None
    text: str | None = None
    finish_reason: str | None = None


class Chunk(msgspec.Struct, gc=False):
    """The fields of a streamed chunk turnbench reads (chat and completions alike).

    Why typed: msgspec skips every other field (id, model, created, logprobs...)
    without building it, which is most of the bytes of a chunk; a chunk whose fields have
    the wrong types fails to decode and is recorded as `malformed`. `gc=False`: decoded JSON
    holds no reference cycles, so the collector need not track a read's hundreds of objects.
    """

    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    """llama.cpp's own figures (its `cache_n`: prompt tokens taken from its cache)."""
    error: Any = None


decode_chunk = msgspec.json.Decoder(Chunk).decode
decode_chunks = msgspec.json.Decoder(list[Chunk]).decode
"""Every chunk of a read in one call (see `sse.decode_events`)."""


def _first_choice(chunk: Chunk, reply: Reply) -> _Choice | None:
    """Take `error`, `usage` and `finish_reason` from a chunk; return its first choice."""
    if chunk.error:
        raise ErrorChunk(chunk.error)
    if chunk.usage:
        reply.usage = chunk.usage
        if chunk.timings:  # llama.cpp: beside the usage, in its last chunk
            reply.timings = chunk.timings
    choices = chunk.choices
    if not choices:
        return None
    choice = choices[0]
    if choice.finish_reason:
        reply.finish_reason = choice.finish_reason
    return choice


def _add_tool_calls(calls: list[_ToolCall], reply: Reply) -> None:
    """Tool-call deltas: each names its call by `index`; name and arguments arrive in pieces."""
    for call in calls:
        slot = reply.tool_calls.setdefault(
            call.index,
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if call.id:
            slot["id"] = call.id
        if call.function is not None:
            slot["function"]["name"] += call.function.name or ""
            slot["function"]["arguments"] += call.function.arguments or ""


def _streamed(model: str, extra: dict[str, Any], **payload: Any) -> dict[str, Any]:
    """A streamed request body that asks for usage in the last chunk."""
    return {
        "model": model,
        **payload,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


class ChatAdapter:
    """`POST /chat/completions` with the messages as they are."""

    path = "/chat/completions"

    def body(self, model: str, messages: list[Message], extra: dict[str, Any]) -> dict[str, Any]:
        """Streamed chat request."""
        return _streamed(model, extra, messages=messages)

    def fold(self, chunks: list[Chunk], reply: Reply) -> int:
        """Read `choices[0].delta` (content, tool calls), `finish_reason` and `usage`.

        This loop is most of the client's per-token cost: it runs once per read over every
        chunk the read brought (see `transport._Stream.on_body`).
        """
        got = 0
        parts = reply.text_parts
        for chunk in chunks:  # `_first_choice` inlined: one call less per token
            if chunk.error:
                raise ErrorChunk(chunk.error)
            if chunk.usage:
                reply.usage = chunk.usage
                if chunk.timings:  # llama.cpp: beside the usage, in its last chunk
                    reply.timings = chunk.timings
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.finish_reason:
                reply.finish_reason = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            content, calls = delta.content, delta.tool_calls
            if content:
                parts.append(content)
            if calls:
                _add_tool_calls(calls, reply)
            if content or calls:
                got += 1
        return got


class CompletionsAdapter:
    """`POST /completions` with the history rendered by the chat template as one prompt."""

    path = "/completions"

    def body(self, model: str, messages: list[Message], extra: dict[str, Any]) -> dict[str, Any]:
        """Streamed completions request; tools do not exist in this API and are dropped."""
        extra = {k: v for k, v in extra.items() if k not in ("tools", "tool_choice")}
        return _streamed(model, extra, prompt=render_chat(messages))

    def fold(self, chunks: list[Chunk], reply: Reply) -> int:
        """Read `choices[0].text`, `finish_reason` and `usage`."""
        got = 0
        for chunk in chunks:
            choice = _first_choice(chunk, reply)
            text = choice.text if choice is not None else None
            if text:
                reply.text_parts.append(text)
                got += 1
        return got


def adapter_for(api: str) -> Adapter:
    """The adapter of a configured API name."""
    return ChatAdapter() if api == "chat" else CompletionsAdapter()
