"""What every API module provides, and the reply and the stream decoding they share.

Why one small interface: the transport (`client/transport.py`) moves bytes and keeps time; it
hands each read's complete SSE events to the API's `read` and, at the end, asks the API
whether the stream ended whole (`ended`), what the usage said (`usage`) and what an error body
means (`error`). Everything else about an API (its path, body, auth headers, event types,
end-of-stream event, usage fields, error shapes) lives in its own module beside this one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec

from turnbench.client.attempt import Attempt
from turnbench.client.sse import decode_events, decode_named_events, payloads
from turnbench.workload.conversation import Message

T = TypeVar("T")

_ERROR_TEXT_LIMIT = 2000


@dataclass(slots=True)
class Reply:
    """What the server said in one attempt, accumulated event by event."""

    text_parts: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    """OpenAI-shaped tool calls (`id`, `type`, `function.name`, `function.arguments`) by
    index, whatever API sent them: the history keeps one shape."""
    usage: dict[str, Any] | None = None
    """The usage object as the API sent it; the API's `usage` reads it."""
    finish_reason: str | None = None
    """In OpenAI's words (`stop`, `length`, `tool_calls`), whatever API sent it."""
    ended: bool = False
    """The API's end of stream arrived (`[DONE]`, `response.completed`, `message_stop`)."""
    response_id: str | None = None
    """The server's id of this reply where a later request can name it (Responses)."""
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


@dataclass(slots=True)
class RequestView:
    """What a request of any API is built from: the session's turn, in OpenAI-style messages."""

    model: str
    messages: list[Message]
    """The whole history as sent, the new messages last."""
    new_messages: Sequence[Message]
    """The messages this turn adds (for APIs that hold the history on the server)."""
    max_tokens: int
    tools: list[Message] | None = None
    """OpenAI function schemas (`{"type": "function", "function": {...}}`)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Body fields of the run's options (`ignore_eos`, `user`, `metadata`)."""
    previous_id: str | None = None
    """The server's id of this session's last reply (`Reply.response_id`), None on a first
    turn or when the API holds no state."""


class StreamError(Exception):
    """An event that carries an error instead of output (the server failed mid-stream)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Malformed(Exception):
    """An event payload that does not decode as the API's event type."""


class Api(Protocol):
    """One API: how its requests look, how its stream reads, what its usage and errors say."""

    name: str
    path: str
    """Appended to the API root (`.../v1`)."""
    end_event: str
    """The name of the event that ends a whole stream, for the `truncated` error."""

    def auth(self, key: str) -> dict[str, str]:
        """The headers that carry an API key."""
        ...

    def request(self, view: RequestView) -> dict[str, Any]:
        """The JSON body of a streamed request."""
        ...

    def read(self, events: bytes, reply: Reply) -> int:
        """Decode one read's complete SSE events and fold them into `reply` in order; return
        how many carried output (text or tool calls). Runs once per read: the hot path.
        Raises `StreamError` at an error event, `Malformed` at a payload that does not
        decode."""
        ...

    def usage(self, reply: Reply, att: Attempt) -> bool:
        """Fill `att`'s prompt, completion and cached tokens from the reply's usage; False
        when the server sent none."""
        ...

    def error(self, body: str) -> str:
        """The message of an error body (a non-2xx answer), on one line."""
        ...


def decode_read(
    events: bytes,
    decode_array: Callable[[bytes], list[T]],
    decode_one: Callable[[bytes], T],
    reply: Reply,
    named: bool = False,
) -> list[T]:
    """Every event of a read decoded, by one call of `decode_array` in the usual shape (see
    `sse.decode_events`; `named`: each event with an `event:` line, `sse.decode_named_events`),
    else one by one so that a bad payload is named; `[DONE]` sets `reply.ended` and is not
    decoded. Raises `Malformed`."""
    fast = (decode_named_events if named else decode_events)(events, decode_array)
    if fast is not None:
        values, done = fast
        if done:
            reply.ended = True
        return values
    out = []
    for event in payloads(events):
        if event == b"[DONE]":
            reply.ended = True
            continue
        try:
            out.append(decode_one(event))
        except msgspec.DecodeError as e:
            raise Malformed(f"bad SSE data ({e}): {event[:200]!r}") from None
    return out


def error_text(body: str) -> str:
    """The `message` of an error body (`{"error": {"message"}}`, OpenAI's and Anthropic's
    alike, or a top-level `message`), else the start of the body."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:_ERROR_TEXT_LIMIT]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:_ERROR_TEXT_LIMIT]
        if isinstance(data.get("message"), str):
            return str(data["message"])[:_ERROR_TEXT_LIMIT]
    return body[:_ERROR_TEXT_LIMIT]


def event_error_text(error: Any) -> str:
    """The message of an error object carried in a stream event."""
    return error_text(msgspec.json.encode(error).decode(errors="replace"))


def bearer(key: str) -> dict[str, str]:
    """OpenAI's auth header."""
    return {"Authorization": f"Bearer {key}"}


def int_or_none(value: object) -> int | None:
    """A usage field that is an integer, else None (a server may send null or omit it)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
