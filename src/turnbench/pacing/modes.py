"""The load modes, each one small typed model named by what it holds constant (as k6's
executors), with the pacer it builds.

Open loop (sessions arrive whatever the server does): `parallel` (every session at t=0) and
`session-rate` (sessions arrive at `rate` per second). Closed loop (a number of users held
constant, each starting its next conversation when the last one ended): `users` and
`sequential` (one user). A mode model holds only its own keys, so `rate` under mode users is
an unknown key, named as such, rather than a value silently ignored.

Why the models live here and not in config.py: a mode and its pacer are one thing; the
config composes them into `load:` (with the run-wide caps) and `stages:` (with a name).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from turnbench.pacing.arrivals import AllAtOnce, Constant, Gamma, Pacer, Poisson, Recorded
from turnbench.pacing.ends import End

MODES = ("parallel", "sequential", "session-rate", "users")
"""Every mode, as `load.mode` and a stage's `mode` name it."""
DEFAULT_MODE = "users"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Mode(_Strict):
    """What every mode shares: the limits that end it (a run's, or a stage's)."""

    closed_loop: ClassVar[bool] = False
    """Whether starting sessions waits on others ending (a number of users held constant)."""

    duration_s: float | None = Field(None, gt=0, description="Stop starting work after this.")
    sessions: int | None = Field(
        None, ge=1, description="Sessions to play in all (parallel: how many start at t=0)."
    )

    def pacer(self, rng: random.Random, start_times: list[float] | None) -> Pacer:
        """The arrival process of an open-loop mode (times from the mode's own start)."""
        raise TypeError(f"mode {self.mode_name} is a closed loop: it has users, not a pacer")

    def user_count(self) -> int:
        """How many users a closed-loop mode holds."""
        raise TypeError(f"mode {self.mode_name} is an open loop: it has a pacer, not users")

    @property
    def mode_name(self) -> str:
        """The mode's name (its `mode` key)."""
        return str(getattr(self, "mode", "?"))


class ParallelMode(Mode):
    """Every session starts at t=0 (open loop); `sessions` says how many."""

    mode: Literal["parallel"] = Field(
        "parallel", description="parallel: all sessions start at t=0 (open loop)."
    )

    def pacer(self, rng: random.Random, start_times: list[float] | None) -> Pacer:
        return AllAtOnce(self.sessions if self.sessions is not None else 1 << 62)


class SessionRateMode(Mode):
    """Sessions arrive at `rate` per second whatever the server does (open loop)."""

    mode: Literal["session-rate"] = Field(
        "session-rate", description="session-rate: sessions arrive open-loop at `rate`."
    )
    rate: float | None = Field(None, gt=0, description="Sessions per second.")
    arrival: Literal["poisson", "constant", "gamma", "trace"] = Field(
        "poisson", description="Arrival process; trace: the dataset's recorded start times."
    )
    burstiness: float = Field(
        1.0, gt=0, description="gamma: shape (1 = poisson, < 1 burstier, > 1 more regular)."
    )
    time_scale: float = Field(
        1.0, gt=0, description="trace arrivals: multiply recorded times by this."
    )

    @model_validator(mode="after")
    def _needs_rate(self) -> SessionRateMode:
        if self.rate is None and self.arrival != "trace":
            raise ValueError("mode session-rate needs `rate` (sessions per second)")
        return self

    def pacer(self, rng: random.Random, start_times: list[float] | None) -> Pacer:
        if self.arrival == "trace":
            return Recorded(start_times or [], self.time_scale)
        assert self.rate is not None
        if self.arrival == "constant":
            return Constant(self.rate)
        if self.arrival == "gamma":
            return Gamma(self.rate, self.burstiness, rng)
        return Poisson(self.rate, rng)


class UsersMode(Mode):
    """`users` concurrent users, each playing one conversation after another (closed loop)."""

    closed_loop: ClassVar[bool] = True
    mode: Literal["users"] = Field(
        "users", description="users: `users` concurrent users, one conversation after another."
    )
    users: int = Field(4, ge=1, description="Concurrent users.")

    def user_count(self) -> int:
        return self.users


class SequentialMode(Mode):
    """One conversation after another: mode users with one user (closed loop)."""

    closed_loop: ClassVar[bool] = True
    mode: Literal["sequential"] = Field(
        "sequential", description="sequential: one conversation after another."
    )

    def user_count(self) -> int:
        return 1


def mode_tag(data: Any) -> str:
    """The tag of a `load:` section or a stage: its `mode`, `users` when it names none.

    Why a function and not pydantic's plain discriminator: a missing `mode` is the default
    mode, not an error, and a model built in code (`RunConfig()`) carries its own."""
    if isinstance(data, dict):
        return str(data.get("mode", DEFAULT_MODE))
    return str(getattr(data, "mode", DEFAULT_MODE))


def mode_end(mode: Mode, requests: int | None = None) -> End:
    """The limits of a mode as an `End`."""
    return End(duration_s=mode.duration_s, sessions=mode.sessions, requests=requests)


def keys_of(mode: str) -> list[str]:
    """The keys a mode takes beyond the shared ones, for an error that names them."""
    model = _BY_NAME.get(mode)
    if model is None:
        return []
    return [k for k in model.model_fields if k not in Mode.model_fields and k != "mode"]


def mode_taking(key: str) -> str | None:
    """The mode whose own key `key` is (`rate` -> session-rate), if one is."""
    return next((name for name in MODES if key in keys_of(name)), None)


_BY_NAME: dict[str, type[Mode]] = {
    "parallel": ParallelMode,
    "session-rate": SessionRateMode,
    "users": UsersMode,
    "sequential": SequentialMode,
}
