"""The immutable plan of one conversation or agent, which every workload source produces.

Why plans hold messages as plain OpenAI-style dicts: they go on the wire as they are, and a
source never needs to know which API module will send them. A turn's user text may be left
unwritten (`input_tokens` only): the session writes it when it sends the turn, so ten thousand
planned sessions cost little memory.

An agent is a conversation with `children`: sub-agents (their own context) or forks (a copy
of the parent's history) started after one of its turns, each its own session with one request
in flight, that a later turn of the parent may wait for. The tree is the agent task.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Turn:
    """One request of a conversation: what the client adds to the history, then sends."""

    messages: tuple[Message, ...] = ()
    """User (or tool-result) messages this turn appends; empty when `input_tokens` is set."""
    input_tokens: int | None = None
    """Write a user message of this many tokens at send time (synthetic workloads)."""
    max_tokens: int | None = None
    """Output token budget for this turn's reply; None uses the run's default."""
    think_time_s: float | None = None
    """Recorded delay before this turn, counted from the end of the previous reply."""
    reply: Message | None = None
    """The dataset's recorded assistant message, replayed with `history: dataset`."""
    tool_time_s: float | None = None
    """The tool's latency before this turn, which carries its results: the wait counts as
    tool time, not think time (recorded, or drawn by the source)."""
    at_s: float | None = None
    """Recorded offset from the session's start (a replay's recorded schedule): the turn is
    never sent earlier, nor before its dependencies ended."""
    compact: bool = False
    """Context compaction: the history (the system prompt excepted) is replaced by this
    turn's messages."""

    def __reduce__(self) -> tuple[type[Turn], tuple[Any, ...]]:
        return _reduce(self)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation plan: an id, an optional system prompt, and its ordered turns."""

    id: str
    turns: tuple[Turn, ...]
    system: str | None = None
    tools: tuple[Message, ...] | None = None
    """OpenAI function schemas sent with every turn (not by the completions API)."""
    group: str | None = None
    """Conversations of one group share a prefix; multi-worker runs keep a group together."""
    start_s: float | None = None
    """Recorded arrival offset from the run start (trace replay); None lets the pacer decide."""
    metadata: dict[str, Any] = field(default_factory=dict)
    children: tuple[Child, ...] = ()
    """Sub-agents and forks this session starts, in the order they start."""

    def __reduce__(self) -> tuple[type[Conversation], tuple[Any, ...]]:
        return _reduce(self)


@dataclass(frozen=True, slots=True)
class Child:
    """A session an agent starts: a sub-agent with its own context, or a fork of the parent's.

    Turn indices are 0-based positions in the parent's `turns`.
    """

    plan: Conversation
    after_turn: int
    """The parent turn whose reply it follows (-1: it starts with the parent)."""
    delay_s: float = 0.0
    """Its start, counted from the end of that reply."""
    join_turn: int | None = None
    """The parent turn that waits for it to end; None: a background child the parent never
    waits for (the task still ends only when it does)."""
    fork: bool = False
    """Starts from the parent's history as it stands (a parallel fork of the context)."""
    at_s: float | None = None
    """Recorded offset of its start from the parent's start (a replay's recorded schedule)."""

    def __reduce__(self) -> tuple[type[Child], tuple[Any, ...]]:
        return _reduce(self)


def walk(plan: Conversation, depth: int = 0) -> Iterator[tuple[Conversation, int]]:
    """Every session of a plan's tree with its depth (the root at 0), parents first."""
    yield plan, depth
    for child in plan.children:
        yield from walk(child.plan, depth + 1)


def _reduce(plan: Any) -> tuple[Any, tuple[Any, ...]]:
    """Pickle a plan as its class and field values, in order.

    Why: plans cross to worker processes, one per session started, thousands a second in an
    open loop. The pickling a slotted dataclass gets by default looks up its fields on every
    call: a one-turn plan took 9.3 µs to send and 8.6 µs to receive, 6.5 and 5.7 this way.
    """
    return type(plan), tuple(getattr(plan, name) for name in plan.__slots__)
