"""Workload configuration: which conversations a run plays, as strict pydantic models.

Why a discriminated union on `type`: one YAML key picks the source, every other key is checked
against that source's model (`extra="forbid"`), so a typo fails before the run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from turnbench.distributions import Distribution

DatasetFormat = Literal["auto", "sharegpt", "rows", "messages", "aiperf", "trace"]


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


class DatasetWorkload(_Common, DatasetOptions):
    """Conversations read from a file."""

    type: Literal["dataset"] = Field("dataset", description="Source: a dataset file.")
    path: Path = Field(description="Dataset file; relative paths resolve against the config.")
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


WorkloadConfig = Annotated[
    SyntheticWorkload | DatasetWorkload | SharedPrefixWorkload, Field(discriminator="type")
]
