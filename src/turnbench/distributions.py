"""Seeded random distributions for lengths, turn counts and think times, as config models.

Why one model: every knob that takes "a number or a distribution" (turns per conversation,
input and output tokens, think time) reads the same way in YAML, e.g. `128`,
`{dist: uniform, min: 64, max: 256}` or `{dist: lognormal, mean: 2.0, sigma: 0.5}`.
"""

from __future__ import annotations

import math
import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Distribution(BaseModel):
    """A number drawn from a seeded distribution; `fixed` returns `mean` every time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dist: Literal["fixed", "uniform", "normal", "exponential", "lognormal"] = Field(
        "fixed", description="Shape of the distribution."
    )
    mean: float = Field(0.0, ge=0, description="Mean (fixed: the value).")
    sigma: float = Field(
        0.0, ge=0, description="normal: standard deviation; lognormal: sigma of the log."
    )
    min: float | None = Field(None, ge=0, description="Lower clip (uniform: lower bound).")
    max: float | None = Field(None, ge=0, description="Upper clip (uniform: upper bound).")

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"dist": "fixed", "mean": value}
        return value

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        if self.dist == "uniform" and (self.min is None or self.max is None):
            raise ValueError("uniform needs min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def sample(self, rng: random.Random) -> float:
        """Draw one value, clipped to [min, max]."""
        if self.dist == "fixed":
            value = self.mean
        elif self.dist == "uniform":
            assert self.min is not None and self.max is not None
            value = rng.uniform(self.min, self.max)
        elif self.dist == "normal":
            value = rng.gauss(self.mean, self.sigma)
        elif self.dist == "exponential":
            value = rng.expovariate(1.0 / self.mean) if self.mean > 0 else 0.0
        else:  # lognormal with the given mean: mu chosen so that E[X] = mean
            mu = math.log(self.mean) - self.sigma**2 / 2 if self.mean > 0 else 0.0
            value = rng.lognormvariate(mu, self.sigma)
        lo = self.min if self.min is not None else 0.0
        hi = self.max if self.max is not None else math.inf
        return min(max(value, lo), hi)

    def sample_int(self, rng: random.Random, minimum: int = 0) -> int:
        """Draw one value rounded to a whole number, at least `minimum`."""
        return max(minimum, round(self.sample(rng)))
