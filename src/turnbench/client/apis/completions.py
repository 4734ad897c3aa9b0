"""`POST /completions`: OpenAI's legacy completions API, the history rendered as one prompt by
the chat template (`tokens.template.render_chat`)."""

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
from turnbench.client.apis.openai_chunks import chunk_usage, decode_chunk, decode_chunks, streamed
from turnbench.client.attempt import Attempt
from turnbench.tokens.template import render_chat


class CompletionsApi:
    """Completions: streamed chunks whose `choices[0].text` is the output, then `[DONE]`."""

    name = "completions"
    path = "/completions"
    end_event = "[DONE]"

    def auth(self, key: str) -> dict[str, str]:
        """`Authorization: Bearer`."""
        return bearer(key)

    def request(self, view: RequestView) -> dict[str, Any]:
        """Streamed completions request; tools do not exist in this API and are not sent."""
        extra = {"max_tokens": view.max_tokens, **view.extra}
        return streamed(view.model, extra, prompt=render_chat(view.messages))

    def read(self, events: bytes, reply: Reply) -> int:
        """Read `choices[0].text`, `finish_reason` and `usage`."""
        got = 0
        for chunk in decode_read(events, decode_chunks, decode_chunk, reply):
            if chunk.error:
                raise StreamError(event_error_text(chunk.error))
            if chunk.usage:
                reply.usage = chunk.usage
                if chunk.timings:
                    reply.timings = chunk.timings
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.finish_reason:
                reply.finish_reason = choice.finish_reason
            if choice.text:
                reply.text_parts.append(choice.text)
                got += 1
        return got

    def usage(self, reply: Reply, att: Attempt) -> bool:
        """The chunk's usage (see `openai_chunks.chunk_usage`)."""
        return chunk_usage(reply, att)

    def error(self, body: str) -> str:
        """`error.message` of OpenAI's error body."""
        return error_text(body)
