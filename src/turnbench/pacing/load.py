"""The `load:` section and the stages of a run as typed models: each load mode's own model
(`pacing/modes.py`) joined to the run-wide keys, or to a stage's name and end policy.

Why a tagged union on `mode`: each mode holds only its own keys, so a key of another mode is
an error that names the mode it belongs to, rather than a value silently ignored; a missing
`mode` is `users` (`mode_tag`). config.py composes these into `RunConfig`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from turnbench.pacing.modes import (
    ParallelMode,
    SequentialMode,
    SessionRateMode,
    UsersMode,
    mode_tag,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _RunWide(_Strict):
    """What a whole run shares whatever its mode or stage: the caps, the request limit, the
    warm-up and the end policy."""

    max_sessions: int | None = Field(None, ge=1, description="Cap on concurrent sessions.")
    max_in_flight: int | None = Field(None, ge=1, description="Cap on concurrent requests.")
    max_requests: int | None = Field(None, ge=1, description="Stop after this many requests.")
    warmup_s: float = Field(
        0.0,
        ge=0,
        description="Requests intended before this are recorded as warm-up and "
        "left out of the metrics.",
    )
    end: Literal["drain", "cut"] = Field(
        "drain",
        description="At the limit: drain (let sessions in flight finish, up to drain_timeout_s) "
        "or cut (cancel them at once).",
    )
    drain_timeout_s: float = Field(30.0, ge=0, description="Longest drain at the end.")


RUN_WIDE_KEYS = tuple(_RunWide.model_fields)
"""The `load:` keys that hold whatever the mode (a probe or a sweep point keeps them)."""


class ParallelLoad(ParallelMode, _RunWide):
    """Mode parallel with the run-wide settings (see docs/load-modes.md)."""


class SessionRateLoad(SessionRateMode, _RunWide):
    """Mode session-rate with the run-wide settings (see docs/load-modes.md)."""


class UsersLoad(UsersMode, _RunWide):
    """Mode users with the run-wide settings (see docs/load-modes.md)."""


class SequentialLoad(SequentialMode, _RunWide):
    """Mode sequential with the run-wide settings (see docs/load-modes.md)."""


LoadConfig = Annotated[
    Annotated[ParallelLoad, Tag("parallel")]
    | Annotated[SessionRateLoad, Tag("session-rate")]
    | Annotated[UsersLoad, Tag("users")]
    | Annotated[SequentialLoad, Tag("sequential")],
    Discriminator(mode_tag),
]
"""When sessions start and how many run at once: one model per mode, picked by `mode`."""


class _StageWide(_Strict):
    """What a stage adds to its mode: a name, and what its sessions do when it ends."""

    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The stage's name in events.db and the report; unset: stage-1, "
        "stage-2... A stage named `warmup` is left out of the run's overall figures.",
    )
    at_end: Literal["continue", "cut"] = Field(
        "continue",
        description="When the stage's time is up: its sessions in flight continue (their "
        "later requests belong to the next stage) or are cut (recorded as cancelled).",
    )

    @model_validator(mode="after")
    def _needs_end(self) -> _StageWide:
        if getattr(self, "duration_s", None) is None:
            raise ValueError("a stage needs duration_s: the time it lasts (its end)")
        if getattr(self, "mode", None) == "parallel" and getattr(self, "sessions", None) is None:
            raise ValueError("a parallel stage needs sessions: how many start at its start")
        return self


class ParallelStage(ParallelMode, _StageWide):
    """A stage of mode parallel: `sessions` start at the stage's start."""


class SessionRateStage(SessionRateMode, _StageWide):
    """A stage of mode session-rate."""


class UsersStage(UsersMode, _StageWide):
    """A stage of mode users."""


class SequentialStage(SequentialMode, _StageWide):
    """A stage of mode sequential."""


StageConfig = Annotated[
    Annotated[ParallelStage, Tag("parallel")]
    | Annotated[SessionRateStage, Tag("session-rate")]
    | Annotated[UsersStage, Tag("users")]
    | Annotated[SequentialStage, Tag("sequential")],
    Discriminator(mode_tag),
]
"""One stage of a staged run: a mode, its parameters and its duration."""
