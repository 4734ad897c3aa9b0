"""The `cache` section of a run's config: how the ideal cached prefix is counted, and the
run's salt.

Why its own module: `workload/` and `engine/` read it without the rest of `config.py`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CacheConfig(BaseModel):
    """How the client accounts for the server's prefix cache."""

    model_config = ConfigDict(extra="forbid")

    block_size: int = Field(
        16,
        ge=1,
        description="Tokens per KV-cache block of the server (vLLM's --block-size, the "
        "simulator's block_size): the unit the ideal cached prefix is counted in.",
    )
    salt: bool = Field(
        True,
        description="Start every conversation with one word unique to this run, so nothing "
        "an earlier run left in the server's prefix cache is reused (prefixes shared inside "
        "the run, such as a common system prompt, still are). Off: conversations are sent as "
        "the workload has them.",
    )
    ideal: bool = Field(
        True,
        description="Compute each request's ideal cached prefix (the longest prefix earlier "
        "requests of this run sent or were answered with) beside the server's reported one.",
    )
    ideal_capacity_mb: int = Field(
        64,
        ge=1,
        description="Memory each worker gives the ideal cache's keys for sharing between "
        "sessions (a few keys a message, and the text of a long one; the least recently used "
        "go first). A session's own history always counts in full.",
    )
