"""`POST /chat/completions`: OpenAI's chat API, the messages sent as they are."""

from __future__ import annotations

from typing import Any

from turnbench.client.apis.base import (
    Reply,
    RequestView,
    StreamError,
    bearer,
    decode_read,
    error_text,
    event_error_text,
)
from turnbench.client.apis.openai_chunks import (
    add_tool_calls,
    chunk_usage,
    decode_chunk,
    decode_chunks,
    streamed,
)
from turnbench.client.attempt import Attempt


class ChatApi:
    """Chat completions: streamed `chat.completion.chunk`s, then `[DONE]`."""

    name = "chat"
    path = "/chat/completions"
    end_event = "[DONE]"

    def auth(self, key: str) -> dict[str, str]:
        """`Authorization: Bearer`."""
        return bearer(key)

    def request(self, view: RequestView) -> dict[str, Any]:
        """Streamed chat request with the history, the tools and the run's options."""
        extra = {"max_tokens": view.max_tokens, **view.extra}
        if view.tools:
            extra["tools"] = view.tools
        return streamed(view.model, extra, messages=view.messages)

    def read(self, events: bytes, reply: Reply) -> int:
        """Read `choices[0].delta` (content, tool calls), `finish_reason` and `usage`.

        This loop is most of the client's per-token cost: it runs once per read over every
        chunk the read brought (see `transport._Stream.on_body`).
        """
        got = 0
        parts = reply.text_parts
        for chunk in decode_read(events, decode_chunks, decode_chunk, reply):
            if chunk.error:
                raise StreamError(event_error_text(chunk.error))
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
                add_tool_calls(calls, reply)
            if content or calls:
                got += 1
        return got

    def usage(self, reply: Reply, att: Attempt) -> bool:
        """The chunk's usage (see `openai_chunks.chunk_usage`)."""
        return chunk_usage(reply, att)

    def error(self, body: str) -> str:
        """`error.message` of OpenAI's error body."""
        return error_text(body)
