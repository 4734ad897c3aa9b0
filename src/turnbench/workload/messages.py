"""The canonical format: one conversation per record as an OpenAI `messages` list.

Why this is the hub: every other dataset format is turned into a messages list and planned
here, so the turn rules (what starts a turn, which reply belongs to it, where think time and
the system prompt come from) are written once. `turnbench dataset convert` writes this format.

Turn rules: a user message, or a run of tool messages after an assistant message with
`tool_calls`, starts a turn; the next assistant message is that turn's recorded reply. A
leading system message is the system prompt. turnbench keys on the first message of a turn,
`delay_seconds` (or `think_time_s`) and `max_tokens`, become `Turn.think_time_s` and
`Turn.max_tokens` and are not sent.

A turn of tool results is different: its recorded delay is the tools' execution time, so it
becomes `Turn.tool_time_s` (recorded as tool time, and kept when dataset think times are
replaced). Every tool message of the turn may carry one: the calls ran in parallel and were
answered at once, so the turn waits for the slowest (the largest delay).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from turnbench.workload.conversation import Conversation, Message, Turn
from turnbench.workload.records import Record, field
from turnbench.workload.report import LoadReport

ROLES = ("system", "user", "assistant", "tool")
THINK_KEYS = ("delay_seconds", "think_time_s")


class MessageError(Exception):
    """A bad message at `index` of a messages list; the caller turns it into an InputError."""

    def __init__(self, index: int, key: str | None, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class Plan:
    """The planned parts of one messages list."""

    system: str | None
    turns: tuple[Turn, ...]
    leading_assistant_dropped: int


def _content(msg: Mapping[str, Any], index: int, role: str) -> Any:
    content = msg.get("content")
    if content is None:
        if role == "assistant":
            return None
        raise MessageError(index, "content", f"a {role} message needs content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, Mapping) for p in content):
        return content
    raise MessageError(index, "content", "expected a string or a list of content parts")


def _wire(msg: Mapping[str, Any], index: int) -> Message:
    role = msg["role"]
    out: Message = {"role": role, "content": _content(msg, index, role)}
    for key in ("name", "tool_call_id"):
        value = msg.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise MessageError(index, key, "expected a string")
            out[key] = value
    calls = msg.get("tool_calls")
    if calls:
        if role != "assistant":
            raise MessageError(index, "tool_calls", "only assistant messages carry tool_calls")
        if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
            raise MessageError(index, "tool_calls", "expected a list of objects")
        out["tool_calls"] = calls
    return out


def _number(msg: Mapping[str, Any], index: int, key: str, *, integer: bool) -> Any:
    value = msg.get(key)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not (0 <= value < float("inf")):
        kind = "an integer" if integer else "a number"
        raise MessageError(index, key, f"expected {kind} >= 0")
    return value


def plan_messages(messages: Sequence[Any]) -> Plan:
    """Split a messages list into a system prompt and turns (rules in the module docstring)."""
    system: str | None = None
    start = 0
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise MessageError(i, None, "expected a message object")
        role = msg.get("role")
        if role not in ROLES:
            raise MessageError(i, "role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    if messages and messages[0]["role"] == "system":
        content = messages[0].get("content")
        if not isinstance(content, str):
            raise MessageError(0, "content", "a system prompt must be a string")
        system, start = content, 1

    turns: list[Turn] = []
    current: list[Message] = []
    first: Mapping[str, Any] = {}
    reply: Message | None = None
    leading = 0
    saw_user = False

    waits: list[float] = []  # the recorded delays of the current turn's tool messages

    def flush() -> None:
        if current:
            think = next((first[k] for k in THINK_KEYS if first.get(k) is not None), None)
            tool = current[0]["role"] == "tool"
            turns.append(
                Turn(
                    messages=tuple(current),
                    max_tokens=first.get("max_tokens"),
                    think_time_s=None if think is None or tool else float(think),
                    reply=reply,
                    tool_time_s=max(waits) if tool and waits else None,
                )
            )

    for i in range(start, len(messages)):
        msg = messages[i]
        role = msg["role"]
        for key in THINK_KEYS:
            _number(msg, i, key, integer=False)
        _number(msg, i, "max_tokens", integer=True)
        wire = _wire(msg, i)
        if role == "user":
            flush()
            current, first, reply, saw_user = [wire], msg, None, True
        elif role == "tool":
            if current and reply is None and current[-1]["role"] == "tool":
                current.append(wire)
            elif reply is not None and reply.get("tool_calls"):
                flush()
                current, first, reply, waits = [wire], msg, None, []
            else:
                raise MessageError(
                    i, "role", "a tool message must follow an assistant message with tool_calls"
                )
            wait = next((msg[k] for k in THINK_KEYS if msg.get(k) is not None), None)
            if wait is not None:
                waits.append(float(wait))
        elif role == "assistant":
            if not current:
                leading += 1
            elif reply is None:
                reply = wire
            else:
                raise MessageError(i, "role", "two assistant messages in a row")
        else:
            raise MessageError(i, "role", "a system message is only allowed first")
    flush()
    if not saw_user:
        raise MessageError(len(messages), None, "a conversation needs at least one user message")
    return Plan(system, tuple(turns), leading)


def parse_tools(rec: Record, value: Any, where: str) -> tuple[Message, ...] | None:
    """Check a tools list: OpenAI function schemas (bare `{name, parameters}` are wrapped)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, Mapping) for t in value):
        raise rec.error("expected a list of tool objects", where)
    tools = tuple(
        dict(t) if "type" in t else {"type": "function", "function": dict(t)} for t in value
    )
    return tools or None


def load_messages(records: Sequence[Record], key: str, report: LoadReport) -> list[Conversation]:
    """Plan every record of a messages dataset (bare lists or objects holding the list at `key`)."""
    out: list[Conversation] = []
    for n, rec in enumerate(records):
        value = rec.value
        obj: Mapping[str, Any] = {}
        if isinstance(value, list):
            msgs, prefix = value, ""
        elif isinstance(value, Mapping):
            obj = value
            msgs, prefix = field(rec, value, key, list, ""), key
        else:
            raise rec.error(f"expected a messages list or an object with '{key}'")
        cid = field(rec, obj, "id", (str, int), "", required=False)
        metadata = field(rec, obj, "metadata", dict, "", required=False) or {}
        group = field(rec, obj, "group", (str, int), "", required=False)
        start_s = field(rec, obj, "start_s", float, "", required=False)
        if start_s is not None and start_s < 0:
            raise rec.error("must be >= 0", "start_s")
        tools = parse_tools(rec, obj.get("tools"), "tools")
        out.append(
            plan_record(
                rec,
                msgs,
                prefix,
                id=str(cid) if cid is not None else f"conv-{n}",
                tools=tools,
                metadata=dict(metadata),
                group=None if group is None else str(group),
                start_s=start_s,
                report=report,
            )
        )
    return out


def plan_record(
    rec: Record,
    msgs: Sequence[Any],
    prefix: str,
    *,
    id: str,
    report: LoadReport,
    tools: tuple[Message, ...] | None = None,
    metadata: dict[str, Any] | None = None,
    group: str | None = None,
    start_s: float | None = None,
) -> Conversation:
    """Plan one messages list of a record, naming the bad message's field on error."""
    try:
        plan = plan_messages(msgs)
    except MessageError as err:
        where = f"{prefix}[{err.index}]" if prefix else f"[{err.index}]"
        if err.key:
            where += f".{err.key}"
        raise rec.error(err.message, where) from None
    report.repair("leading assistant message dropped", plan.leading_assistant_dropped)
    return Conversation(
        id=id,
        turns=plan.turns,
        system=plan.system,
        tools=tools,
        group=group,
        start_s=start_s,
        metadata=metadata or {},
    )


def to_record(conv: Conversation) -> dict[str, Any]:
    """Write a plan back as one canonical record, keeping think and tool times and max_tokens.

    Why: `dataset convert` output must load back to the same plan (round trip).
    """
    msgs: list[Message] = []
    if conv.system is not None:
        msgs.append({"role": "system", "content": conv.system})
    for turn in conv.turns:
        for i, msg in enumerate(turn.messages):
            msg = dict(msg)
            wait = turn.tool_time_s if turn.tool_time_s is not None else turn.think_time_s
            if i == 0 and wait is not None:
                msg["delay_seconds"] = wait
            if i == 0 and turn.max_tokens is not None:
                msg["max_tokens"] = turn.max_tokens
            msgs.append(msg)
        if turn.reply is not None:
            msgs.append(dict(turn.reply))
    out: dict[str, Any] = {"id": conv.id, "messages": msgs}
    if conv.tools:
        out["tools"] = list(conv.tools)
    if conv.group is not None:
        out["group"] = conv.group
    if conv.start_s is not None:
        out["start_s"] = conv.start_s
    if conv.metadata:
        out["metadata"] = conv.metadata
    return out
