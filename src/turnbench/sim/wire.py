"""The seam between the request pipeline and each API the simulator speaks.

Why: `app.py` runs every generation request the same way (routing, faults, queueing, prefix
cache, prefill, decode); what differs between Chat Completions, Completions, Responses and
Messages is only how the body is read and how the reply, its stream events, its usage and its
errors are written. Each API is one module with an `Api` (the parser) whose `parse` returns the
request and the `Wire` (the bytes of that one reply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from turnbench.sim.protocol import RequestError, SimRequest
from turnbench.sim.textgen import Reply


@dataclass(frozen=True, slots=True)
class Usage:
    """A reply's token counts, with the prompt split by what the prefix cache did."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    """Prompt tokens read from the prefix cache (whole blocks from the start)."""
    cache_write_tokens: int
    """Prompt tokens in full blocks that were not read, which this request computes and
    stores in the prefix cache (Anthropic's `cache_creation_input_tokens`)."""

    @property
    def uncached_tokens(self) -> int:
        """The rest: the partial last block, which is computed but never cached (Anthropic's
        `input_tokens`); every prompt token when the prefix cache is off."""
        return self.prompt_tokens - self.cached_tokens - self.cache_write_tokens


class Wire(Protocol):
    """The bytes of one reply in one API's format; a stream is `head`, one `tokens` event per
    output token, then `tail`."""

    malformed: bytes
    """The broken event a `malformed` fault inserts; an API whose clients skip events without
    an `event:` line gives it one, so the fault is not silently dropped."""

    def head(self, usage: Usage) -> list[bytes]:
        """Events before the first token; `usage` counts no completion tokens yet."""
        ...

    def tokens(self, pieces: Sequence[str], finish_reason: str, usage: Usage) -> list[bytes]:
        """One event per output token."""
        ...

    def tail(self, reply: Reply, usage: Usage) -> list[bytes]:
        """Events after the last token: how the reply ended, and its usage."""
        ...

    def body(self, reply: Reply, usage: Usage) -> bytes:
        """The non-streaming reply as JSON."""
        ...

    def keep(self, reply: Reply) -> None:
        """Called before the reply goes out whenever the fault plan lets it arrive whole, for
        APIs whose server holds state (Responses' `previous_response_id`)."""
        ...


class Api(Protocol):
    """One generation endpoint: validates its bodies and words its errors."""

    def parse(self, raw: bytes) -> tuple[SimRequest, Wire]:
        """The request and the wire of its reply; raises `RequestError` for a bad body."""
        ...

    def error_body(self, err: RequestError) -> bytes:
        """The error as this API's JSON; the status is `err.status`."""
        ...
