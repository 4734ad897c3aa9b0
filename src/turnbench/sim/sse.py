"""Chat Completions and Completions replies as bytes: SSE chunks for streams, JSON otherwise.

Why prebuilt byte templates: a streamed token is one SSE event, and at a thousand streams a
second the simulator writes tens of thousands of events a second on one core; splicing the
token's JSON string between a per-request head and tail costs a fraction of encoding a dict.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence

import msgspec

from turnbench.sim.textgen import PIECES, Reply
from turnbench.sim.wire import Usage

DONE = b"data: [DONE]\n\n"
MALFORMED = b"data: {not json\n\n"
"""The broken event a `malformed` fault emits."""

_encode = msgspec.json.encode
_PIECE_JSON: dict[str, bytes] = {p: _encode(p) for p in PIECES + tuple(p[1:] for p in PIECES)}
_PIECE_JSON[""] = b'""'
_BOOT = os.urandom(4).hex()
_ids = itertools.count(1)
_RUNNING_USAGE = b',"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}\n\n'


def json_str(text: str) -> bytes:
    """A JSON string literal, cached for the reply vocabulary (every API's token events)."""
    cached = _PIECE_JSON.get(text)
    return cached if cached is not None else _encode(text)


def new_id(prefix: str) -> str:
    """A reply id unique across restarts (a random boot tag) and within one (a counter)."""
    return f"{prefix}{_BOOT}{next(_ids):010x}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, object]:
    """The OpenAI `usage` object, with vLLM's `prompt_tokens_details.cached_tokens`."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def _with_usage(event: bytes, prompt_tokens: int, completion_tokens: int) -> bytes:
    """A chunk event with the usage so far, as `stream_options.continuous_usage_stats` asks.

    vLLM's running usage has no `prompt_tokens_details`; every chunk ends in `}\n\n`, so the
    field goes in before that brace.
    """
    total = prompt_tokens + completion_tokens
    return event[:-3] + _RUNNING_USAGE % (prompt_tokens, completion_tokens, total)


class ReplyFormat:
    """The `Wire` of a chat or completions reply; why per reply: the id and timestamp are
    baked in once."""

    malformed = MALFORMED

    def __init__(
        self, *, chat: bool, model: str, include_usage: bool, continuous_usage: bool
    ) -> None:
        """`include_usage`, `continuous_usage`: the request's `stream_options`."""
        self.chat = chat
        self.include_usage = include_usage
        self.continuous_usage = continuous_usage
        self.id = new_id("chatcmpl-" if chat else "cmpl-")
        self.created = int(time.time())
        obj = b"chat.completion.chunk" if chat else b"text_completion"
        self._head = (
            b'data: {"id":"' + self.id.encode() + b'","object":"' + obj + b'","created":'
            + str(self.created).encode() + b',"model":' + _encode(model) + b',"choices":'
        )  # fmt: skip
        if chat:
            self._open = self._head + b'[{"index":0,"delta":{"content":'
            self._close = b'},"logprobs":null,"finish_reason":'
        else:
            self._open = self._head + b'[{"index":0,"text":'
            self._close = b',"logprobs":null,"finish_reason":'
        self._end = b',"stop_reason":null}]}\n\n'
        self.model = model

    def head(self, usage: Usage) -> list[bytes]:
        """A chat stream opens with the role event; a completions stream with its first token."""
        if not self.chat:
            return []
        return [self._role_event(usage.prompt_tokens if self.continuous_usage else None)]

    def tokens(self, pieces: Sequence[str], finish_reason: str, usage: Usage) -> list[bytes]:
        """One chunk per token, with the usage so far when `continuous_usage_stats` asks."""
        running = usage.prompt_tokens if self.continuous_usage else None
        return self._token_events(pieces, finish_reason, running)

    def tail(self, reply: Reply, usage: Usage) -> list[bytes]:
        """The usage chunk when `include_usage` asks, then `[DONE]`."""
        if not self.include_usage:
            return [DONE]
        counts = (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        return [self._usage_event(*counts), DONE]

    def body(self, reply: Reply, usage: Usage) -> bytes:
        """The non-streaming reply: `chat.completion` or `text_completion` with usage."""
        return self._full_body(
            "".join(reply.pieces),
            reply.finish_reason,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
        )

    def keep(self, reply: Reply) -> None:
        """Nothing to keep: these APIs are stateless, the client resends the history."""

    def _role_event(self, prompt_tokens: int | None = None) -> bytes:
        """The first chat event: the assistant role with empty content, as vLLM sends it.

        `prompt_tokens`: given when every chunk carries the usage so far.
        """
        event = self._head + (
            b'[{"index":0,"delta":{"role":"assistant","content":""},'
            b'"logprobs":null,"finish_reason":null}]}\n\n'
        )
        return event if prompt_tokens is None else _with_usage(event, prompt_tokens, 0)

    def _token_events(
        self, pieces: Sequence[str], finish_reason: str, prompt_tokens: int | None = None
    ) -> list[bytes]:
        """One event per piece; the last one carries the finish reason.

        An empty reply (a stop string hit at once) is one event with empty text, so the client
        still sees how the reply finished. `prompt_tokens`: given when every chunk carries the
        usage so far (`stream_options.continuous_usage_stats`); the empty reply's is 0 tokens.
        """
        opened, closed = self._open, self._close + b"null" + self._end
        events = [opened + json_str(p) + closed for p in pieces[:-1]]
        last = pieces[-1] if pieces else ""
        events.append(
            opened + json_str(last) + self._close + b'"' + finish_reason.encode() + b'"' + self._end
        )
        if prompt_tokens is not None:
            n = len(pieces)
            events = [_with_usage(e, prompt_tokens, min(i, n)) for i, e in enumerate(events, 1)]
        return events

    def _usage_event(self, prompt_tokens: int, completion_tokens: int, cached: int) -> bytes:
        """The final `choices: []` event with `usage` (when `stream_options.include_usage`)."""
        return (
            self._head + b"[],\"usage\":" + _encode(usage(prompt_tokens, completion_tokens, cached))
            + b"}\n\n"
        )  # fmt: skip

    def _full_body(
        self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int, cached: int
    ) -> bytes:
        """The reply object of `body`."""
        if self.chat:
            choice: dict[str, object] = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
            }
        else:
            choice = {"index": 0, "text": text}
        choice.update({"logprobs": None, "finish_reason": finish_reason, "stop_reason": None})
        return _encode(
            {
                "id": self.id,
                "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [choice],
                "usage": usage(prompt_tokens, completion_tokens, cached),
            }
        )
