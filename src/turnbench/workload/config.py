"""Workload configuration: which conversations a run plays, as strict pydantic models.

Why a discriminated union on `type`: one YAML key picks the source, every other key is checked
against that source's model (`extra="forbid"`), so a typo fails before the run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from turnbench.distributions import Distribution

DatasetFormat = Literal["auto", "sharegpt", "rows", "messages", "aiperf", "trace", "weka"]


class _Common(BaseModel):
    """Options every workload source shares: how its conversations repeat."""

    model_config = ConfigDict(extra="forbid")

    cycle: bool = Field(
        False,
        description="False: play each conversation once. True: repeat the list without end "
        "(copy k of a conversation gets id `ID#k`).",
    )
    salt: bool = Field(
        False,
        description="When cycling, put a short distinct salt at the very start of each copy's "
        "system prompt (or first user message) so copies never share the server's prefix cache.",
    )


class SyntheticWorkload(_Common):
    """Random conversations of given lengths; user text is written at send time."""

    type: Literal["synthetic"] = Field("synthetic", description="Source: generated conversations.")
    conversations: int | None = Field(
        None,
        ge=1,
        description="Number of distinct conversations, played once (or repeated with `cycle`). "
        "Unset: endless, every conversation new, so the run's limit decides when it ends.",
    )
    turns: Distribution = Field(
        default_factory=lambda: Distribution(mean=5), description="Turns per conversation."
    )
    input_tokens: Distribution = Field(
        default_factory=lambda: Distribution(mean=128), description="User tokens per turn."
    )
    output_tokens: Distribution = Field(
        default_factory=lambda: Distribution(mean=128), description="max_tokens per turn."
    )
    system_prompt_tokens: int = Field(
        0, ge=0, description="Tokens of the system prompt (0: no system prompt)."
    )
    system_prompt_groups: int = Field(
        1,
        ge=1,
        description="Number of distinct shared system prompts; conversation i uses group "
        "i % groups, byte-identical within a group.",
    )
    seed: int | None = Field(None, description="Seed of this workload; None uses the run seed.")


class ShareGPTOptions(BaseModel):
    """How ShareGPT records are repaired and filtered."""

    model_config = ConfigDict(extra="forbid")

    merge_split_parts: bool = Field(
        True,
        description="Join records whose ids share a base and differ by a numeric suffix "
        "(`abc_0`, `abc_8`) into one conversation, ordered by the suffix.",
    )
    alternation: Literal["merge", "drop"] = Field(
        "merge",
        description="Consecutive messages of one side: `merge` joins them into one message, "
        "`drop` drops the conversation.",
    )
    min_turns: int = Field(1, ge=1, description="Drop conversations with fewer user turns.")
    max_turns: int | None = Field(
        None, ge=1, description="Truncate conversations to their first this many user turns."
    )
    max_chars: int | None = Field(
        None, ge=1, description="Drop conversations holding a message longer than this."
    )


class MessagesOptions(BaseModel):
    """Where a JSON file's records keep their messages list."""

    model_config = ConfigDict(extra="forbid")

    messages_key: str | None = Field(
        None,
        description="Key of the messages list in each record (e.g. `traj` for tau-bench dumps); "
        "None: `messages`, or else the one key of the records that holds a messages list.",
    )


class TraceOptions(BaseModel):
    """How a Mooncake trace becomes text and time."""

    model_config = ConfigDict(extra="forbid")

    block_size: int = Field(512, ge=1, description="Tokens per hash id (Mooncake: 512).")
    time_scale: float = Field(
        1.0,
        gt=0,
        description="Multiplies every recorded time: 0.5 replays twice as fast, 2.0 half as fast.",
    )


class WekaOptions(BaseModel):
    """How a WEKA / AgentX agent trace is timed (see docs/datasets.md, WEKA)."""

    model_config = ConfigDict(extra="forbid")

    timing: Literal["recorded", "think", "none"] = Field(
        "think",
        description="recorded: each request at its recorded offset, and never sooner than its "
        "recorded wait after what it waits for; think: each request its recorded think or tool "
        "time after what it waits for ended (the recorded server's response time left out); "
        "none: back to back.",
    )
    max_idle_s: float | None = Field(
        60.0,
        gt=0,
        description="Cap on any one recorded wait or idle gap, in recorded seconds (before "
        "`time_scale`); None: no cap.",
    )
    time_scale: float = Field(
        1.0,
        gt=0,
        description="Multiplies every recorded time: 0.1 replays ten times as fast.",
    )


class DatasetOptions(BaseModel):
    """Per-format options of a dataset load (each format reads only its own block)."""

    model_config = ConfigDict(extra="forbid")

    max_conversations: int | None = Field(
        None, ge=1, description="Keep only the first this many conversations (after filters)."
    )
    sharegpt: ShareGPTOptions = Field(
        default_factory=ShareGPTOptions, description="ShareGPT repairs and filters."
    )
    messages: MessagesOptions = Field(
        default_factory=MessagesOptions, description="Messages (canonical) format options."
    )
    trace: TraceOptions = Field(default_factory=TraceOptions, description="Mooncake trace options.")
    weka: WekaOptions = Field(
        default_factory=WekaOptions, description="WEKA / AgentX agent trace options."
    )


class DatasetWorkload(_Common, DatasetOptions):
    """Conversations read from a file."""

    type: Literal["dataset"] = Field("dataset", description="Source: a dataset file.")
    path: Path = Field(
        description="Dataset file, or a folder of .json/.jsonl files read in name order; "
        "relative paths resolve against the config."
    )
    format: DatasetFormat = Field("auto", description="File format; `auto` detects it.")


class SharedPrefixWorkload(_Common):
    """Groups of prompts sharing a system prompt (SGLang generated-shared-prefix)."""

    type: Literal["shared_prefix"] = Field(
        "shared_prefix", description="Source: shared-prefix groups."
    )
    num_groups: int = Field(64, ge=1, description="Number of distinct shared system prompts.")
    prompts_per_group: int = Field(16, ge=1, description="Questions per group.")
    system_prompt_len: int = Field(2048, ge=0, description="Tokens of each shared prefix.")
    question_len: int = Field(128, ge=1, description="Tokens of each question.")
    output_len: int = Field(256, ge=1, description="max_tokens of each answer.")
    system_prompt_len_range_ratio: float = Field(
        1.0, ge=0, le=1, description="Prefix length is uniform in [len*ratio, len]."
    )
    question_len_range_ratio: float = Field(
        1.0, ge=0, le=1, description="Question length is uniform in [len*ratio, len]."
    )
    output_len_range_ratio: float = Field(
        1.0, ge=0, le=1, description="Output length is uniform in [len*ratio, len]."
    )
    as_sessions: bool = Field(
        False,
        description="False: every prompt is a one-turn conversation. True: each group is one "
        "multi-turn session over its questions.",
    )
    turns_per_session: int | None = Field(
        None, ge=1, description="Turns of each session (questions cycled); None: prompts_per_group."
    )
    seed: int | None = Field(None, description="Seed of this workload; None uses the run seed.")


class ToolCatalogue(BaseModel):
    """The tools every synthetic agent is sent (one catalogue, shared by all agents)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(8, ge=0, le=128, description="Number of tools (OpenAI function schemas).")
    tokens: int = Field(150, ge=0, description="Tokens of each tool's description.")


class SubagentOptions(BaseModel):
    """The children a synthetic agent starts: sub-agents (own context) or forks."""

    model_config = ConfigDict(extra="forbid")

    fan_out: Distribution = Field(
        default_factory=lambda: Distribution(mean=0),
        description="Children a session starts at once (one `task` tool call each); 0: none.",
    )
    depth: int = Field(
        1, ge=1, le=4, description="Levels of children: 1 children, 2 also their children..."
    )
    after_step: Distribution = Field(
        default_factory=lambda: Distribution(dist="uniform", min=1, max=3),
        description="The step (1-based) whose reply starts the children; clipped to the "
        "session's steps (a session with no step starts none).",
    )
    steps: Distribution = Field(
        default_factory=lambda: Distribution(mean=3), description="Tool steps of each child."
    )
    system_prompt_tokens: int = Field(
        1000, ge=0, description="Tokens of the sub-agents' system prompt, shared by all of them."
    )
    task_tokens: Distribution = Field(
        default_factory=lambda: Distribution(mean=150),
        description="Tokens of a child's task (a sub-agent's first message, a fork's branch).",
    )
    result_tokens: Distribution = Field(
        default_factory=lambda: Distribution(mean=300),
        description="Tokens of each child's answer, the parent's result of its task call.",
    )
    join: Literal["wait", "background"] = Field(
        "wait",
        description="wait: the parent's next turn waits for its children; background: it "
        "does not (the agent task still ends when they do).",
    )
    fork: bool = Field(
        False,
        description="True: children are parallel forks of the parent's context (its history "
        "as it stands) instead of sub-agents with their own.",
    )


class SyntheticAgentWorkload(_Common):
    """Generated agents: tool loops with parallel calls, sub-agents, forks, compaction."""

    type: Literal["synthetic_agent"] = Field(
        "synthetic_agent", description="Source: generated agents (docs/agents.md)."
    )
    agents: int | None = Field(
        None,
        ge=1,
        description="Number of distinct agents, played once (or repeated with `cycle`). "
        "Unset: endless, every agent new, so the run's limit decides when it ends.",
    )
    system_prompt_tokens: int = Field(
        2000, ge=0, description="Tokens of the system prompt every agent shares (0: none)."
    )
    tools: ToolCatalogue = Field(
        default_factory=ToolCatalogue, description="The tool catalogue every agent is sent."
    )
    task_tokens: Distribution = Field(
        default_factory=lambda: Distribution(mean=200),
        description="Tokens of the user's task, an agent's first message.",
    )
    steps: Distribution = Field(
        default_factory=lambda: Distribution(mean=6),
        description="Tool steps of an agent: replies that call tools, before its final answer.",
    )
    parallel_tools: Distribution = Field(
        default_factory=lambda: Distribution(dist="uniform", min=1, max=3),
        description="Tool calls a step makes at once, answered together in the next turn.",
    )
    tool_call_tokens: Distribution = Field(
        default_factory=lambda: Distribution(mean=30),
        description="Tokens of each tool call's arguments (in the recorded reply).",
    )
    tool_result_tokens: Distribution = Field(
        default_factory=lambda: Distribution(dist="lognormal", mean=400, sigma=0.8, max=8000),
        description="Tokens of each tool result: the context's growth per step.",
    )
    tool_latency_s: Distribution = Field(
        default_factory=lambda: Distribution(dist="lognormal", mean=0.5, sigma=1.0, max=30),
        description="The tools' latency before the turn that carries their results, seconds "
        "(recorded as tool time, not think time).",
    )
    output_tokens: Distribution = Field(
        default_factory=lambda: Distribution(mean=128), description="max_tokens of each turn."
    )
    subagents: SubagentOptions = Field(
        default_factory=SubagentOptions, description="Sub-agents and forks."
    )
    compact_above_tokens: int | None = Field(
        None,
        ge=1,
        description="Context compaction: when a turn's planned context would pass this, it "
        "asks for a summary and the next turn replaces the history with it. None: never.",
    )
    compact_to_tokens: int = Field(
        2000, ge=1, description="Tokens of a compaction's summary (its request's max_tokens)."
    )
    seed: int | None = Field(None, description="Seed of this workload; None uses the run seed.")


WorkloadConfig = Annotated[
    SyntheticWorkload | DatasetWorkload | SharedPrefixWorkload | SyntheticAgentWorkload,
    Field(discriminator="type"),
]
