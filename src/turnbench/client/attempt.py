"""The record of one request attempt, built on the hot path and written by the recorder.

Why a msgspec Struct: it is compact, cheap to build, and turns into a SQLite row without a
dict in between. `array_like`: it crosses processes as a msgpack array in column order (no
field names in every row), which the events.db writer inserts as it decodes it. Every time
is nanoseconds since the run's start on one monotonic clock.
"""

from __future__ import annotations

import msgspec

# Error kinds: each server fault is recorded as its own kind (docs/reliability.md).
CONNECT_ERROR = "connect_error"
HTTP_4XX = "http_4xx"
HTTP_5XX = "http_5xx"
RATE_LIMITED = "rate_limited"
CONTEXT_OVERFLOW = "context_overflow"
RESET = "reset"
MALFORMED = "malformed"
TRUNCATED = "truncated"
FIRST_TOKEN_TIMEOUT = "first_token_timeout"
IDLE_TIMEOUT = "idle_timeout"
TIMEOUT = "timeout"
CANCELLED = "cancelled"

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_CANCELLED = "cancelled"


class Attempt(msgspec.Struct, gc=False, array_like=True):
    """One request attempt: who sent it, when, what came back, and how it ended."""

    stage: str
    worker: int
    session_id: str
    conversation_id: str
    turn_index: int
    attempt: int
    t_intended_ns: int
    t_sent_ns: int = 0
    t_first_token_ns: int | None = None
    t_last_token_ns: int | None = None
    t_end_ns: int = 0
    gate_wait_ns: int = 0
    chunk_gaps: bytes = b""
    """Gaps between content chunks after the first, as little-endian int64 nanoseconds."""
    content_chunks: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    token_source: str = "usage"
    context_messages: int = 0
    dropped_messages: int = 0
    status: str = STATUS_OK
    http_status: int | None = None
    error_kind: str | None = None
    error_message: str | None = None
    finish_reason: str | None = None
    reconnects: int = 0
    """Fresh connections opened because a pooled one was closed before the server answered."""
    replica: str | None = None
    """The replica that served it, from the response header `target.replica_header`; None
    when the server sent none. Last, so rows of the fields before it keep their positions."""
    ideal_cached_tokens: int | None = None
    """The prompt's longest prefix an unbounded prefix cache would hold (earlier requests of
    this worker had it computed, or generated it as a reply), in whole `cache.block_size`
    blocks, in the server's tokens (`cache/ideal.py`); None when not computed
    (`cache.ideal: false`)."""
    task_id: str = ""
    """The agent task (the root session of its tree; a plain conversation is its own)."""
    parent_session_id: str | None = None
    """The session that started this one (agents); None for a root."""
    depth: int = 0
    """Sub-agent depth: 0 for a root, 1 for its children, and so on."""
    branch: int = 0
    """The session's number among its parent's children (1-based); 0 for a root."""
    tool_wait_ns: int = 0
    """Of the wait before this turn was due, the tool's latency (the turn carries its
    results); 0 when the wait was think time or none."""
