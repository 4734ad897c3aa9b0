"""Flat per-message rows (the MLCommons Endpoints format), grouped into conversations.

Why contiguity is required rather than sorted out: the format promises it, and a file that
breaks it is usually two files concatenated or a bad export; naming the exact line that breaks
it is more useful than silently regrouping.

Each row: `conversation_id`, `turn` (increasing), `role` (user | assistant | tool), `content`;
a first row may carry `system` and `tools`; assistant rows may carry `tool_calls`; a tool row's
`tool_results` become tool messages. `delay_seconds` is the wait before a turn (on an assistant
row: before the next row's turn): on a user row the user's think time, on a tool row the
tool's execution time, which becomes the turn's tool time (`Turn.tool_time_s`, see
`messages.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from turnbench.workload.conversation import Conversation, Message
from turnbench.workload.messages import MessageError, parse_tools, plan_messages
from turnbench.workload.records import Record, field, non_negative
from turnbench.workload.report import LoadReport

ROLES = ("user", "assistant", "tool", "system")


class _Conv:
    def __init__(self, cid: str, rec: Record) -> None:
        self.id = cid
        self.first = rec
        self.system: str | None = None
        self.tools: tuple[Message, ...] | None = None
        self.messages: list[Message] = []
        self.lines: list[Record] = []
        self.turn = -1
        self.pending_delay: float | None = None


def _messages_of(rec: Record, conv: _Conv) -> list[Message]:
    row = rec.value
    role = field(rec, row, "role", str, "")
    if role not in ROLES:
        raise rec.error(f"expected one of {', '.join(ROLES)}, got {role!r}", "role")
    delay = non_negative(
        rec, field(rec, row, "delay_seconds", float, "", required=False), "delay_seconds"
    )
    system = field(rec, row, "system", str, "", required=False)
    if system is not None:
        if conv.system is not None or conv.messages:
            raise rec.error("only a conversation's first row may set the system prompt", "system")
        conv.system = system
    tools = parse_tools(rec, row.get("tools"), "tools")
    if tools is not None:
        conv.tools = tools
    out: list[Message] = []
    if role == "tool":
        results = field(rec, row, "tool_results", list, "")
        for i, result in enumerate(results):
            where = f"tool_results[{i}]"
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": field(rec, result, "tool_call_id", str, where),
                    "content": field(rec, result, "content", str, where),
                }
            )
        if not out:
            raise rec.error("a tool row needs at least one result", "tool_results")
    elif role == "assistant":
        msg: dict[str, Any] = {
            "role": "assistant",
            "content": field(rec, row, "content", str, "", required=False),
        }
        calls = field(rec, row, "tool_calls", list, "", required=False)
        if calls:
            msg["tool_calls"] = calls
        out.append(msg)
    else:
        out.append({"role": role, "content": field(rec, row, "content", str, "")})
    if role == "assistant":
        conv.pending_delay = delay
    else:
        delay = delay if delay is not None else conv.pending_delay
        conv.pending_delay = None
        if delay is not None:
            out[0]["delay_seconds"] = delay
    return out


def _finish(conv: _Conv, report: LoadReport) -> Conversation:
    msgs = [{"role": "system", "content": conv.system}] if conv.system is not None else []
    offset = len(msgs)
    msgs += conv.messages
    try:
        plan = plan_messages(msgs)
    except MessageError as err:
        index = min(max(err.index - offset, 0), len(conv.lines) - 1)
        raise conv.lines[index].error(
            f"conversation {conv.id!r}: {err.message}", err.key or "role"
        ) from None
    report.repair("leading assistant message dropped", plan.leading_assistant_dropped)
    return Conversation(id=conv.id, turns=plan.turns, system=plan.system, tools=conv.tools)


def load_rows(records: Sequence[Record], report: LoadReport) -> list[Conversation]:
    """Group contiguous rows into conversations, checking order and every row's fields."""
    out: list[Conversation] = []
    seen: dict[str, int] = {}
    conv: _Conv | None = None
    for rec in records:
        if not isinstance(rec.value, dict):
            raise rec.error("expected a row object")
        cid = str(field(rec, rec.value, "conversation_id", (str, int), ""))
        turn = field(rec, rec.value, "turn", int, "")
        if conv is None or cid != conv.id:
            if cid in seen:
                raise rec.error(
                    f"rows of conversation {cid!r} are not contiguous (it started at line "
                    f"{seen[cid]} and was interrupted)",
                    "conversation_id",
                )
            if conv is not None:
                out.append(_finish(conv, report))
            seen[cid] = rec.line
            conv = _Conv(cid, rec)
        if turn <= conv.turn:
            raise rec.error(
                f"turn {turn} is not after the previous row's turn {conv.turn} "
                f"of conversation {cid!r}",
                "turn",
            )
        conv.turn = turn
        msgs = _messages_of(rec, conv)
        conv.messages += msgs
        conv.lines += [rec] * len(msgs)
    assert conv is not None
    out.append(_finish(conv, report))
    return out
