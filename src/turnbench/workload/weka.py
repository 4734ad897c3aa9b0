"""WEKA / AgentX agent traces (kv-cache-tester's format): one JSON object per file, whose
`requests` are API calls (`in`, `out`, `hash_ids` of `block_size`-token blocks, `t`,
`api_time`, `think_time`) and sub-agent markers holding the sub-agent's own calls. Each file
becomes one agent task: a root plan whose sub-agents are `Child` plans, so they run in
parallel while the parent waits where the trace says it did.

Why text from the hash ids (`trace.block_text`): equal ids must reach the server as equal
text, across sessions too (sub-agents of one trace share their system and tool prefix), so the
server's prefix cache sees the sharing the trace recorded. The whole blocks of the system and
tool region (`system_tokens + tool_tokens`) form the plan's system prompt, the rest of the
first call its first user message. A later call whose ids extend the previous call's sends
only its new part, sized so the planned context is its `in` (the previous reply, the server's
own, is in the history); the previous call's last block may differ (its last tokens
re-tokenize as the text goes on: seen in these traces, never more than one block). Any other
change of prefix is a compaction: the history but the system prompt is replaced by the call's
whole context. Replies are the server's live text: the trace holds no tool names or arguments
to replay, and the server's own reply keeps each next prompt's prefix what it cached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from turnbench.tokens.sizer import TextSizer
from turnbench.workload.config import WekaOptions
from turnbench.workload.conversation import Child, Conversation, Turn
from turnbench.workload.records import Record, field, non_negative
from turnbench.workload.report import LoadReport
from turnbench.workload.trace import MAX_INPUT_TOKENS, prompt_text

CALL_TYPES = ("n", "s")
SUBAGENT = "subagent"


@dataclass(frozen=True, slots=True)
class _Call:
    """One recorded API call of an agent."""

    path: str
    t: float
    n_in: int
    n_out: int
    ids: tuple[int, ...]
    api_time: float
    think_time: float | None
    tool: bool
    """Its new input is a tool's result: the wait before it is the tool's latency."""
    model: str | None

    @property
    def end(self) -> float:
        return self.t + self.api_time


@dataclass(slots=True)
class _Agent:
    """The calls of one agent (the trace's root, or a sub-agent) and the sub-agents it starts."""

    id: str
    path: str
    system_tokens: int
    tool_tokens: int
    calls: list[_Call] = dc_field(default_factory=list)
    subs: list[_Sub] = dc_field(default_factory=list)


@dataclass(slots=True)
class _Sub:
    """A sub-agent marker: its start, recorded end (parent's clock), and the parent call it
    follows (0-based)."""

    t: float
    end: float
    after: int
    agent: _Agent


def _int(rec: Record, obj: Any, key: str, path: str, *, required: bool, low: int) -> int | None:
    value = field(rec, obj, key, int, path, required=required)
    if value is not None and value < low:
        raise rec.error(f"must be >= {low}, got {value}", f"{path}.{key}" if path else key)
    return value


def _number(rec: Record, obj: Any, key: str, path: str, *, required: bool) -> float | None:
    where = f"{path}.{key}" if path else key
    return non_negative(rec, field(rec, obj, key, float, path, required=required), where)


def _call(
    rec: Record, r: Any, path: str, block_size: int, report: LoadReport, origin: float
) -> _Call:
    """One API call; `origin`: its agent's start in the file's times (0: they are relative)."""
    n_in = _int(rec, r, "in", path, required=True, low=1)
    assert n_in is not None
    if n_in > MAX_INPUT_TOKENS:
        raise rec.error(f"must be at most {MAX_INPUT_TOKENS}", f"{path}.in")
    n_out = _int(rec, r, "out", path, required=True, low=0)
    assert n_out is not None
    if n_out == 0:
        report.repair("out of 0 played as 1 token")
    ids = field(rec, r, "hash_ids", list, path)
    for i, h in enumerate(ids):
        if not isinstance(h, int) or isinstance(h, bool):
            raise rec.error("expected an integer", f"{path}.hash_ids[{i}]")
    if len(ids) > -(-n_in // block_size):
        raise rec.error(
            f"{n_in} tokens is fewer than its {len(ids)} hash ids of {block_size} tokens cover",
            f"{path}.in",
        )
    types = field(rec, r, "input_types", list, path, required=False) or []
    model = field(rec, r, "model", str, path, required=False)
    t = _number(rec, r, "t", path, required=True)
    assert t is not None
    return _Call(
        path=path,
        t=max(0.0, t - origin),
        n_in=n_in,
        n_out=max(1, n_out),
        ids=tuple(ids),
        api_time=_number(rec, r, "api_time", path, required=False) or 0.0,
        think_time=_number(rec, r, "think_time", path, required=False),
        tool="tool_result" in types,
        model=model,
    )


def _first_call_t(requests: list[Any]) -> float | None:
    """The raw `t` of the first API call of a sub-agent (None when it has none to read)."""
    for r in requests:
        if isinstance(r, dict) and r.get("type") in CALL_TYPES:
            t = r.get("t")
            return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else None
    return None


def _agent(
    rec: Record,
    obj: Any,
    path: str,
    agent_id: str,
    block_size: int,
    report: LoadReport,
    origin: float = 0.0,
) -> _Agent:
    """Parse an agent's `requests` (`path` is where they are: '' for the file's root).

    A sub-agent's times count from its start (kv-cache-tester), or from the root trace's
    start (SemiAnalysis' AgentX traces, as AIPerf notes): a first call at or after the
    marker's time says the latter, and they are made relative (`origin`).
    """
    agent = _Agent(
        id=agent_id,
        path=path,
        system_tokens=_int(rec, obj, "system_tokens", path, required=False, low=0) or 0,
        tool_tokens=_int(rec, obj, "tool_tokens", path, required=False, low=0) or 0,
    )
    key = f"{path}.requests" if path else "requests"
    requests = field(rec, obj, "requests", list, path)
    if not requests:
        what = "a sub-agent with no requests" if path else "a trace with no requests"
        raise rec.error(what, key)
    for i, r in enumerate(requests):
        where = f"{key}[{i}]"
        if not isinstance(r, dict):
            raise rec.error("expected a request object", where)
        kind = field(rec, r, "type", str, where)
        if kind in CALL_TYPES:
            agent.calls.append(_call(rec, r, where, block_size, report, origin))
            continue
        if kind != SUBAGENT:
            raise rec.error(
                f"unknown request type {kind!r} (expected n, s or subagent)", f"{where}.type"
            )
        if not agent.calls:
            raise rec.error(
                "a sub-agent before any request of its parent (no turn to follow)", where
            )
        raw_t = _number(rec, r, "t", where, required=True)
        assert raw_t is not None
        t = max(0.0, raw_t - origin)
        name = field(rec, r, "agent_id", (str, int), where, required=False)
        first = _first_call_t(r["requests"]) if isinstance(r.get("requests"), list) else None
        absolute = raw_t > 0 and first is not None and first >= raw_t
        if absolute:
            report.repair("sub-agent times counted from the trace's start: made relative")
        sid = f"{agent_id}/{name or f'subagent-{i}'}"
        sub = _agent(rec, r, where, sid, block_size, report, raw_t if absolute else 0.0)
        duration = _number(rec, r, "duration_ms", where, required=False)
        end = t + (duration / 1000 if duration is not None else max(c.end for c in sub.calls))
        agent.subs.append(_Sub(t=t, end=end, after=len(agent.calls) - 1, agent=sub))
    if not agent.calls:
        raise rec.error("no API call (type n or s), only sub-agents", key)
    return agent


@dataclass(frozen=True, slots=True)
class Trace:
    """One parsed trace file: its root agent and block size."""

    id: str
    block_size: int
    root: _Agent


def parse(rec: Record, report: LoadReport) -> Trace:
    """Check a whole trace; any bad value raises InputError naming its request and field."""
    v = rec.value
    if not isinstance(v, dict):
        raise rec.error("expected a WEKA trace object")
    block_size = _int(rec, v, "block_size", "", required=True, low=1)
    assert block_size is not None
    tid = field(rec, v, "id", (str, int), "", required=False)
    trace_id = str(tid) if tid is not None else _stem(rec)
    return Trace(trace_id, block_size, _agent(rec, v, "", trace_id, block_size, report))


def _stem(rec: Record) -> str:
    name = rec.file.rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] or name
    return stem if rec.line == 1 else f"{stem}-{rec.line}"


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _extends(prev: tuple[int, ...], ids: tuple[int, ...]) -> bool:
    """Whether `ids` go on from `prev`: all of prev's ids lead them, its last one excepted
    (and at least one shared when prev has any)."""
    n = _common(prev, ids)
    return n >= len(prev) - 1 and len(ids) >= len(prev) and (n > 0 or not prev)


class _Clock:
    """An agent's recorded times with every idle gap above the cap cut to it: the offsets of
    its calls and sub-agent starts in the replay's (unscaled) time."""

    def __init__(self, agent: _Agent, cap: float | None) -> None:
        joined = _joins(agent)
        events = [(c.t, 0, k) for k, c in enumerate(agent.calls)]
        events += [(s.t, 1, k) for k, s in enumerate(agent.subs)]
        calls, subs = [0.0] * len(agent.calls), [0.0] * len(agent.subs)
        shift, prev_t, busy = 0.0, 0.0, 0.0
        for t, kind, k in sorted(events):
            dep = busy
            if kind == 0:
                dep = max([busy, *(agent.subs[j].end for j in joined.get(k, ()))])
            idle = t - max(prev_t, dep)
            if cap is not None and idle > cap:
                shift += idle - cap
            (calls if kind == 0 else subs)[k] = t - shift
            if kind == 0:
                busy = max(busy, agent.calls[k].end)
            prev_t = t
        self.calls: list[float] = calls
        self.subs: list[float] = subs


def _joins(agent: _Agent) -> dict[int, list[int]]:
    """Parent call index -> the sub-agents it waits for: the first call that starts at or
    after a sub-agent's recorded end (none: a background sub-agent)."""
    out: dict[int, list[int]] = {}
    for j, sub in enumerate(agent.subs):
        k = _join_of(agent, sub)
        if k is not None:
            out.setdefault(k, []).append(j)
    return out


def _join_of(agent: _Agent, sub: _Sub) -> int | None:
    for k in range(sub.after + 1, len(agent.calls)):
        if agent.calls[k].t >= sub.end:
            return k
    return None


@dataclass
class _Builder:
    """Makes the plans of one trace: texts from its hash ids, times by `options`."""

    options: WekaOptions
    block_size: int
    trace: str
    """The trace's id: with a call's path, the seed of the text beyond its hash ids."""
    sizer: TextSizer
    report: LoadReport

    def _scaled(self, seconds: float) -> float:
        """A recorded wait as played: capped, scaled, or none at all."""
        cap = self.options.max_idle_s
        capped = seconds if cap is None else min(seconds, cap)
        return 0.0 if self.options.timing == "none" else capped * self.options.time_scale

    def plan(self, agent: _Agent, ideal: dict[str, Any] | None = None) -> Conversation:
        """The plan of an agent and, as its children, of its sub-agents (`ideal`: the
        trace's statistics, kept in a root's metadata for `dataset inspect`)."""
        bs = self.block_size
        first = agent.calls[0]
        region = (agent.system_tokens + agent.tool_tokens) // bs
        n_sys = max(0, min(region, len(first.ids), (first.n_in - 1) // bs))
        system = prompt_text(first.ids[:n_sys], n_sys * bs, bs, "", self.sizer) if n_sys else None
        clock = _Clock(agent, self.options.max_idle_s)
        joined = _joins(agent)
        turns: list[Turn] = []
        ctx = 0  # the planned context (recorded tokens) once the call's reply is in
        for k, call in enumerate(agent.calls):
            filler = f"{self.trace}:{call.path}"
            compact = k > 0 and not _extends(agent.calls[k - 1].ids, call.ids)
            if k == 0 or compact:
                n = max(1, call.n_in - n_sys * bs)
                text = prompt_text(call.ids[n_sys:], n, bs, filler, self.sizer)
                if compact:
                    self.report.repair("prefix changed: played as a compaction")
            else:
                n = call.n_in - ctx
                if n < 1:
                    self.report.repair(
                        "new part under 1 token (the recorded client dropped some of the "
                        "previous reply, e.g. thinking): sent as 1 token"
                    )
                    n = 1
                new_ids = call.ids[len(agent.calls[k - 1].ids) :]
                text = prompt_text(new_ids, n, bs, filler, self.sizer)
            ctx = (call.n_in if k == 0 or compact else ctx + n) + call.n_out
            wait = self._wait(agent, k, joined.get(k, ()))
            tool = k > 0 and call.tool
            at_s = None
            if k > 0 and self.options.timing == "recorded":
                at_s = clock.calls[k] * self.options.time_scale
            turns.append(
                Turn(
                    messages=({"role": "user", "content": text},),
                    max_tokens=call.n_out,
                    think_time_s=None if k == 0 or tool else wait,
                    tool_time_s=wait if tool else None,
                    at_s=at_s,
                    compact=compact,
                )
            )
        children = tuple(self._child(agent, j, clock, joined) for j in range(len(agent.subs)))
        metadata: dict[str, Any] = {
            "source": "weka",
            "agent": agent.id,
            "models": [c.model for c in agent.calls],
            "input_tokens": [c.n_in for c in agent.calls],
        }
        if ideal is not None:
            metadata.update(ideal)
        return Conversation(
            id=agent.id, turns=tuple(turns), system=system, metadata=metadata, children=children
        )

    def _wait(self, agent: _Agent, k: int, joins: Sequence[int]) -> float:
        """Call k's recorded wait: its think time (else the gap from the previous call's
        recorded end), or for a call that joins sub-agents the gap from the later of that end
        and their recorded ends."""
        if k == 0:
            return 0.0
        call, prev = agent.calls[k], agent.calls[k - 1]
        if joins:
            dep = max(prev.end, *(agent.subs[j].end for j in joins))
            return self._scaled(max(0.0, call.t - dep))
        if call.think_time is not None:
            return self._scaled(call.think_time)
        return self._scaled(max(0.0, call.t - prev.end))

    def _child(self, agent: _Agent, j: int, clock: _Clock, joined: dict[int, list[int]]) -> Child:
        sub = agent.subs[j]
        join = next((k for k, subs in joined.items() if j in subs), None)
        after = agent.calls[sub.after]
        scale = self.options.time_scale
        if self.options.timing == "recorded":
            delay, at_s = 0.0, clock.subs[j] * scale
        elif self.options.timing == "think":
            gap = clock.subs[j] - (clock.calls[sub.after] + after.api_time)
            delay, at_s = max(0.0, gap) * scale, None
        else:
            delay, at_s = 0.0, None
        return Child(
            plan=self.plan(sub.agent),
            after_turn=sub.after,
            delay_s=delay,
            join_turn=join,
            at_s=at_s,
        )


def _absolute_calls(agent: _Agent, start: float = 0.0) -> Iterator[tuple[float, _Call]]:
    """Every call of an agent's tree with its start on the trace's clock."""
    for call in agent.calls:
        yield start + call.t, call
    for sub in agent.subs:
        yield from _absolute_calls(sub.agent, start + sub.t)


def ideal_stats(trace: Trace) -> dict[str, Any]:
    """The trace's ideal cached tokens: for each call (in recorded start order), the tokens of
    its leading blocks whose ids an earlier call of the file already sent (what a prefix
    cache that never evicts would hold); with its input tokens and recorded span."""
    seen: set[int] = set()
    hit = total = 0
    span = 0.0
    for start, call in sorted(_absolute_calls(trace.root), key=lambda x: x[0]):
        n = 0
        for h in call.ids:
            if h not in seen:
                break
            n += 1
        hit += min(n * trace.block_size, call.n_in)
        total += call.n_in
        seen.update(call.ids)
        span = max(span, start + call.api_time)
    return {
        "trace": trace.id,
        "ideal_cached_tokens": hit,
        "recorded_input_tokens": total,
        "recorded_span_s": span,
    }


def load_weka(
    records: Sequence[Record],
    options: WekaOptions,
    report: LoadReport,
    sizer: TextSizer = TextSizer(),
) -> list[Conversation]:
    """One agent-task plan per trace record (a file is one record), sub-agents as children."""
    plans = []
    for rec in records:
        trace = parse(rec, report)
        builder = _Builder(options, trace.block_size, trace.id, sizer, report)
        plans.append(builder.plan(trace.root, ideal_stats(trace)))
    return plans
