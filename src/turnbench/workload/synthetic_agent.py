"""Synthetic agents: tool loops, parallel tool calls, sub-agents, forks and compaction.

Why planned this way: the request shapes must be real tool-calling ones in every API, so each
step is a recorded assistant reply carrying `tool_calls` (replayed into the history in both
history modes, `Session.accept`) and the next turn answers every call with a `tool` message.
A step that fans out calls a `task` tool once per child; the turn that carries those calls'
results is the one that joins the children (it waits for them, as a coding agent waits for
its sub-agents' answers).

Shared text (the system prompts and the tool catalogue) is written once per workload from
the seed, so every agent sends it byte for byte and the prefix cache can hold it. Everything
else of agent i is drawn from a random stream of (seed, i) alone: agents are built one at a
time as the run asks for them, and agent i is the same agent whatever came before it.
Task messages are left unwritten (`Turn.input_tokens`, written at send time); tool results
and summaries are written here, since a plan's messages must be whole.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from typing import overload

from turnbench.distributions import Distribution
from turnbench.tokens.sizer import TextSizer
from turnbench.workload.config import SubagentOptions, SyntheticAgentWorkload
from turnbench.workload.conversation import Child, Conversation, Message, Turn
from turnbench.workload.cycling import cycled

SUMMARIZE = (
    "Your context is nearly full. Summarize the conversation so far: the task, what was "
    "done, what is left, and the facts needed to go on."
)
"""The request that starts a compaction; its reply is the summary."""

TASK_TOOL = "task"
"""The tool whose calls start sub-agents (or forks); its results are their answers."""

BACKGROUND_NOTE = "Started in the background."
"""A task call's result when its child runs in the background (nobody waits for it)."""

_NOTE_TOKENS = 8
"""Planned tokens of a short fixed note (a background result, another fork's branch)."""

_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "What to do."}},
    "required": ["input"],
}


def spawns(sub: SubagentOptions) -> bool:
    """Whether any session can start children (a fan-out that is not a fixed 0)."""
    return sub.fan_out.dist != "fixed" or sub.fan_out.mean > 0


def tool_catalogue(cfg: SyntheticAgentWorkload, seed: int, sizer: TextSizer) -> tuple[Message, ...]:
    """The tools every agent is sent: `tools.count` functions with descriptions of
    `tools.tokens` tokens, and the `task` tool when sub-agents are configured."""
    rng = random.Random(f"turnbench-agent-tools-{seed}")
    tools: list[Message] = []
    for j in range(1, cfg.tools.count + 1):
        description = sizer.make_text(cfg.tools.tokens, rng) or f"Tool number {j}."
        tools.append(_function(f"tool_{j}", description))
    if spawns(cfg.subagents):
        tools.append(_function(TASK_TOOL, "Start a sub-agent on a task; returns its answer."))
    return tuple(tools)


def _function(name: str, description: str) -> Message:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": _PARAMETERS},
    }


def synthetic_agents(
    cfg: SyntheticAgentWorkload, seed: int, sizer: TextSizer = TextSizer()
) -> Iterator[Conversation]:
    """Yield `cfg.agents` agent plans (repeated as `cycle` and `salt` say, like every source),
    or new ones without end when it is unset; deterministic in the seed (cfg.seed, else the
    run's). Agents are built as they are asked for: a cycled copy is rebuilt, not kept."""
    seed = cfg.seed if cfg.seed is not None else seed
    shared = _Shared.of(cfg, seed, sizer)
    if cfg.agents is None:
        return (shared.agent(seed, i) for i in count())
    return cycled(_Agents(shared, seed, cfg.agents), cycle=cfg.cycle, salt=cfg.salt, sizer=sizer)


class _Agents(Sequence[Conversation]):
    """The first n agents as a sequence that builds agent i when it is read."""

    def __init__(self, shared: _Shared, seed: int, n: int) -> None:
        self.shared, self.seed, self.n = shared, seed, n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, index: int) -> Conversation: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Conversation]: ...
    def __getitem__(self, index: int | slice) -> Conversation | Sequence[Conversation]:
        if isinstance(index, slice):
            return [self[i] for i in range(self.n)[index]]
        if not -self.n <= index < self.n:
            raise IndexError(index)
        return self.shared.agent(self.seed, index % self.n)


@dataclass(frozen=True)
class _Shared:
    """What every agent of a workload shares, written once."""

    cfg: SyntheticAgentWorkload
    sizer: TextSizer
    system: str | None
    sub_system: str | None
    tools: tuple[Message, ...] | None

    @classmethod
    def of(cls, cfg: SyntheticAgentWorkload, seed: int, sizer: TextSizer) -> _Shared:
        def prompt(kind: str, n_tokens: int) -> str | None:
            return sizer.make_text(n_tokens, random.Random(f"turnbench-agent-{kind}-{seed}"))

        return cls(
            cfg=cfg,
            sizer=sizer,
            system=prompt("system", cfg.system_prompt_tokens) or None,
            sub_system=prompt("subagent-system", cfg.subagents.system_prompt_tokens) or None,
            tools=tool_catalogue(cfg, seed, sizer) or None,
        )

    @property
    def tools_tokens(self) -> int:
        """The catalogue's planned tokens: its descriptions."""
        return self.cfg.tools.count * self.cfg.tools.tokens

    def agent(self, seed: int, index: int) -> Conversation:
        """Agent `index`: its whole tree of sessions, from a random stream of its own."""
        builder = _Builder(self, random.Random(f"turnbench-agent-{seed}-{index}"))
        floor = self.tools_tokens + _tokens(self.cfg.system_prompt_tokens, self.system)
        return builder.session(
            f"agent-{index}",
            "0",
            0,
            system=self.system,
            first=(),
            first_tokens=builder.draw(self.cfg.task_tokens),
            floor=floor,
        )


def _tokens(planned: int, text: str | None) -> int:
    return planned if text else 0


@dataclass
class _Pending:
    """Children the step just planned starts, waiting for the turn that carries their
    results."""

    plans: list[Conversation]
    after_turn: int


class _Builder:
    """Plans the sessions of one agent tree from one random stream."""

    def __init__(self, shared: _Shared, rng: random.Random) -> None:
        self.shared = shared
        self.cfg = shared.cfg
        self.rng = rng

    def text(self, n_tokens: int, lead: str | None = None) -> str:
        return self.shared.sizer.make_text(n_tokens, self.rng, lead)

    def draw(self, dist: Distribution, minimum: int = 1) -> int:
        return dist.sample_int(self.rng, minimum)

    def calls(self, tag: str, step: int, names: list[str]) -> tuple[Message, int]:
        """The recorded reply of a step, one `tool_calls` entry per name, and its planned
        tokens (the calls' arguments)."""
        calls, tokens = [], 0
        for j, name in enumerate(names, 1):
            n = self.draw(self.cfg.tool_call_tokens)
            tokens += n
            arguments = json.dumps({"input": self.text(n)})
            calls.append(
                {
                    "id": f"call_{tag}_{step}_{j}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
        return {"role": "assistant", "content": None, "tool_calls": calls}, tokens

    def session(
        self,
        plan_id: str,
        tag: str,
        depth: int,
        *,
        system: str | None,
        first: tuple[Message, ...],
        first_tokens: int,
        floor: int,
        start: int | None = None,
    ) -> Conversation:
        """One session of the tree and, recursively, its children.

        `first`: the first turn's messages (a fork's answers to its parent's task calls);
        empty: a task message of `first_tokens` tokens, written at send time.
        `floor`: the planned context a compaction keeps (system prompt and tools); `start`:
        the planned context before the first turn (a fork's copied history; None: `floor`).
        `tag` makes the session's tool call ids unique in its tree.
        """
        cfg, sub = self.cfg, self.cfg.subagents
        steps = self.draw(cfg.steps if depth == 0 else sub.steps, 0)
        spawn_step, fan_out = 0, 0
        if depth < sub.depth and steps >= 1:
            fan_out = self.draw(sub.fan_out, 0)
            if fan_out:
                spawn_step = min(self.draw(sub.after_step), steps)
        turns: list[Turn] = []
        children: list[Child] = []
        pending: _Pending | None = None

        def add(turn: Turn) -> None:
            """Append a turn; the first turn after a spawn carries its children's results."""
            nonlocal pending
            turns.append(turn)
            if pending is not None and len(turns) - 1 > pending.after_turn:
                join = len(turns) - 1 if sub.join == "wait" else None
                children.extend(
                    Child(plan, after_turn=pending.after_turn, join_turn=join, fork=sub.fork)
                    for plan in pending.plans
                )
                pending = None

        context = floor if start is None else start
        new, new_tokens, tool_time = first, first_tokens, None
        for step in range(1, steps + 2):
            out = self.draw(cfg.output_tokens)
            compact = False
            limit = cfg.compact_above_tokens
            if limit is not None and step > 1 and context + new_tokens + out > limit:
                summarize = {"role": "user", "content": SUMMARIZE}
                add(
                    Turn((*new, summarize), max_tokens=cfg.compact_to_tokens, tool_time_s=tool_time)
                )
                summary = {"role": "user", "content": self.text(cfg.compact_to_tokens, "Summary")}
                new, new_tokens, tool_time = (summary,), cfg.compact_to_tokens, None
                context, compact = floor, True
            reply: Message | None = None
            reply_tokens = out
            if step == spawn_step:
                reply, reply_tokens = self.calls(tag, step, [TASK_TOOL] * fan_out)
            elif step <= steps:
                n_tools = self.cfg.tools.count
                names = [
                    f"tool_{self.rng.randint(1, n_tools)}" if n_tools else "tool"
                    for _ in range(self.draw(cfg.parallel_tools))
                ]
                reply, reply_tokens = self.calls(tag, step, names)
            add(
                Turn(
                    messages=new,
                    input_tokens=None if new else new_tokens,
                    max_tokens=out,
                    reply=reply,
                    tool_time_s=tool_time,
                    think_time_s=0.0 if compact else None,
                    compact=compact,
                )
            )
            context += new_tokens + reply_tokens
            if reply is None:
                break
            calls = reply["tool_calls"]
            if step == spawn_step:
                pending = _Pending(
                    self._children(plan_id, tag, depth, calls, floor, context), len(turns) - 1
                )
                sizes = [self.draw(sub.result_tokens) if sub.join == "wait" else 0 for _ in calls]
                tool_time = 0.0  # the answers are there when the children end
            else:
                sizes = [self.draw(cfg.tool_result_tokens) for _ in calls]
                tool_time = cfg.tool_latency_s.sample(self.rng)
            new = tuple(
                {
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "content": self.text(n) if n else BACKGROUND_NOTE,
                }
                for call, n in zip(calls, sizes, strict=True)
            )
            new_tokens = sum(n or _NOTE_TOKENS for n in sizes)
        return Conversation(
            id=plan_id,
            turns=tuple(turns),
            system=system,
            tools=self.shared.tools,
            children=tuple(children),
        )

    def _children(
        self,
        plan_id: str,
        tag: str,
        depth: int,
        calls: list[Message],
        floor: int,
        context: int,
    ) -> list[Conversation]:
        """Plan the children a spawning step starts, one per task call.

        A sub-agent has its own context: the sub-agents' system prompt and a task message. A
        fork starts from its parent's history, which ends with the task calls: its first turn
        answers them all, its own call with its branch's task.
        """
        sub = self.cfg.subagents
        plans: list[Conversation] = []
        for n in range(1, len(calls) + 1):
            child_id, child_tag = f"{plan_id}.{n}", f"{tag}_{n}"
            task = self.draw(sub.task_tokens)
            if not sub.fork:
                system = self.shared.sub_system
                own_floor = self.shared.tools_tokens + _tokens(sub.system_prompt_tokens, system)
                plans.append(
                    self.session(
                        child_id,
                        child_tag,
                        depth + 1,
                        system=system,
                        first=(),
                        first_tokens=task,
                        floor=own_floor,
                    )
                )
                continue
            answers = tuple(
                {
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "content": self.text(task, f"branch_{n}")
                    if j == n
                    else f"Branch {j} is another fork's.",
                }
                for j, call in enumerate(calls, 1)
            )
            plans.append(
                self.session(
                    child_id,
                    child_tag,
                    depth + 1,
                    system=None,
                    first=answers,
                    first_tokens=task + _NOTE_TOKENS * (len(calls) - 1),
                    floor=floor,
                    start=context,
                )
            )
        return plans
