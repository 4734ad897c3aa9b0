"""The chunk of OpenAI's chat and completions streams, and the usage both report.

Why shared by two modules: `/chat/completions` and `/completions` stream the same
`chat.completion.chunk`-like object (`choices`, `usage`, llama.cpp's `timings`, `error`) and end
with `[DONE]`; they differ in the request body and in where a choice keeps its text.
"""

from __future__ import annotations

from typing import Any

import msgspec

from turnbench.client.apis.base import Reply, int_or_none
from turnbench.client.attempt import Attempt


class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, gc=False):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct, gc=False):
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class Choice(msgspec.Struct, gc=False):
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

    choices: list[Choice] | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    """llama.cpp's own figures (its `cache_n`: prompt tokens taken from its cache)."""
    error: Any = None


decode_chunk = msgspec.json.Decoder(Chunk).decode
decode_chunks = msgspec.json.Decoder(list[Chunk]).decode
"""Every chunk of a read in one call (see `sse.decode_events`)."""


def add_tool_calls(calls: list[ToolCallDelta], reply: Reply) -> None:
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


def streamed(model: str, extra: dict[str, Any], **payload: Any) -> dict[str, Any]:
    """A streamed request body that asks for usage in the last chunk."""
    return {
        "model": model,
        **payload,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def chunk_usage(reply: Reply, att: Attempt) -> bool:
    """`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`; llama.cpp's
    `timings.cache_n` where the OpenAI field is missing."""
    usage = reply.usage
    if not usage:
        return False
    att.prompt_tokens = int_or_none(usage.get("prompt_tokens"))
    att.completion_tokens = int_or_none(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    att.cached_tokens = (
        int_or_none(details.get("cached_tokens")) if isinstance(details, dict) else None
    )
    if att.cached_tokens is None and reply.timings:
        att.cached_tokens = int_or_none(reply.timings.get("cache_n"))
    return True
