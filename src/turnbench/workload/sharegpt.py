"""ShareGPT records (`{"id", "conversations": [{"from", "value"}]}`), repaired into plans.

Why repairs instead of errors: ShareGPT dumps are scraped, and real files hold split
conversations, replies without a question and runs of one side. Broken *shapes* (a missing
`from`, a number for `value`) are InputErrors; broken *dialogue* is repaired or dropped, and
every change is counted in the load report.

Choices: split parts (`abc_0`, `abc_8`) join in suffix order under the base id; a leading
reply is dropped; `alternation: merge` joins a run of one side into one message, `drop` drops
the conversation; `max_turns` truncates (keeps the first turns), `min_turns` and `max_chars`
drop. Turns count requests (user turns and tool-result turns).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from turnbench.workload.config import ShareGPTOptions
from turnbench.workload.conversation import Conversation, Message
from turnbench.workload.messages import plan_record
from turnbench.workload.records import Record, field
from turnbench.workload.report import LoadReport

USER = {"human", "user"}
ASSISTANT = {"gpt", "assistant", "chatgpt", "bing", "bard", "model"}
ROLES = (*sorted(USER), *sorted(ASSISTANT), "system", "function_call", "observation")
_SPLIT = re.compile(r"^(.+)_(\d+)$")


@dataclass
class _Part:
    rec: Record
    id: str | None
    messages: list[Message]
    tools: tuple[Message, ...] | None


def _function_call(rec: Record, value: str, where: str, n: int) -> dict[str, Any]:
    try:
        call = json.loads(value)
    except (ValueError, RecursionError):
        raise rec.error("a function_call value must be JSON {name, arguments}", where) from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise rec.error("a function_call value must be JSON {name, arguments}", where)
    args = call.get("arguments", {})
    return {
        "id": f"call_{n}",
        "type": "function",
        "function": {"name": call["name"], "arguments": json.dumps(args)},
    }


def _tools(rec: Record, value: Any) -> tuple[Message, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise rec.error("expected a JSON list of function schemas", "tools") from None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise rec.error("expected a list of function schemas", "tools")
    return tuple(t if "type" in t else {"type": "function", "function": t} for t in value) or None


def _parse(rec: Record) -> _Part:
    convs = field(rec, rec.value, "conversations", list, "")
    cid = field(rec, rec.value, "id", (str, int), "", required=False)
    msgs: list[Message] = []
    calls = 0
    for i, item in enumerate(convs):
        where = f"conversations[{i}]"
        who = field(rec, item, "from", str, where)
        value = field(rec, item, "value", str, where)
        if who in USER:
            msgs.append({"role": "user", "content": value})
        elif who in ASSISTANT:
            msgs.append({"role": "assistant", "content": value})
        elif who == "system":
            msgs.append({"role": "system", "content": value})
        elif who == "function_call":
            call = _function_call(rec, value, f"{where}.value", calls)
            calls += 1
            msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif who == "observation":
            msgs.append({"role": "tool", "content": value, "tool_call_id": f"call_{calls - 1}"})
        else:
            raise rec.error(f"expected one of {', '.join(ROLES)}, got {who!r}", f"{where}.from")
    return _Part(rec, None if cid is None else str(cid), msgs, _tools(rec, rec.value.get("tools")))


def _merge_parts(parts: list[_Part], report: LoadReport) -> list[_Part]:
    """Join split parts sharing a base id, in suffix order, at the first part's position."""
    bases: dict[str, list[tuple[int, _Part]]] = {}
    order: list[_Part | str] = []
    for part in parts:
        m = _SPLIT.match(part.id or "")
        if m is None:
            order.append(part)
            continue
        if m.group(1) not in bases:
            bases[m.group(1)] = []
            order.append(m.group(1))
        bases[m.group(1)].append((int(m.group(2)), part))
    out: list[_Part] = []
    for item in order:
        if isinstance(item, _Part):
            out.append(item)
            continue
        group = sorted(bases[item], key=lambda sp: sp[0])
        if len(group) == 1:
            out.append(group[0][1])
            continue
        report.repair("split parts merged", len(group) - 1)
        first = group[0][1]
        msgs = [m for _, p in group for m in p.messages]
        out.append(replace(first, id=item, messages=msgs))
    return out


def _side(msg: Message) -> str:
    return "assistant" if msg["role"] == "assistant" else msg["role"]


def _join(a: Message, b: Message) -> Message:
    texts = [t for t in (a.get("content"), b.get("content")) if t]
    out: Message = {**a, "content": "\n\n".join(texts) if texts else None}
    calls = [*a.get("tool_calls", []), *b.get("tool_calls", [])]
    if calls:
        out["tool_calls"] = calls
    return out


def _repair(msgs: list[Message], mode: str, report: LoadReport) -> list[Message] | None:
    """Fix the dialogue order; None means the conversation is dropped (reason counted)."""
    system = msgs[:1] if msgs and msgs[0]["role"] == "system" else []
    body = msgs[len(system) :]
    late = [m for m in body if m["role"] == "system"]
    report.repair("system message not first dropped", len(late))
    body = [m for m in body if m["role"] != "system"]
    lead = 0
    while body and body[0]["role"] != "user":
        body.pop(0)
        lead += 1
    report.repair("leading assistant message dropped", lead)
    out: list[Message] = []
    for msg in body:
        prev = out[-1] if out else None
        if msg["role"] == "tool" and (
            prev is None or not (prev.get("tool_calls") or prev["role"] == "tool")
        ):
            report.drop("tool result without a tool call")
            return None
        if prev is not None and msg["role"] != "tool" and _side(prev) == _side(msg):
            if mode == "drop":
                report.drop("broken user/assistant alternation")
                return None
            report.repair(f"consecutive {msg['role']} messages merged")
            out[-1] = _join(prev, msg)
            continue
        out.append(msg)
    if not out:
        report.drop("no user message")
        return None
    return system + out


def load_sharegpt(
    records: Sequence[Record], options: ShareGPTOptions, report: LoadReport
) -> list[Conversation]:
    """Parse, merge, repair and filter ShareGPT records into plans (see the module docstring)."""
    parts = []
    for rec in records:
        if not isinstance(rec.value, dict):
            raise rec.error("expected a ShareGPT object with 'conversations'")
        parts.append(_parse(rec))
    if options.merge_split_parts:
        parts = _merge_parts(parts, report)
    out: list[Conversation] = []
    for n, part in enumerate(parts):
        msgs = _repair(part.messages, options.alternation, report)
        if msgs is None:
            continue
        if options.max_chars is not None and any(
            len(m.get("content") or "") > options.max_chars for m in msgs
        ):
            report.drop("message longer than max_chars")
            continue
        conv = plan_record(
            part.rec,
            msgs,
            "conversations",
            id=part.id if part.id is not None else f"conv-{n}",
            tools=part.tools,
            report=report,
        )
        if len(conv.turns) < options.min_turns:
            report.drop("fewer than min_turns turns")
            continue
        if options.max_turns is not None and len(conv.turns) > options.max_turns:
            report.repair("truncated to max_turns")
            conv = replace(conv, turns=conv.turns[: options.max_turns])
        out.append(conv)
    return out
