"""Session arrival processes as pure functions of the number of sessions started.

Why pure: a pacer answers "when is session k due?" from counts alone, with no clock and no
sleeping, so each process is tested exactly; the engine's event loop is the only place that
sleeps (as vegeta's Pacer). Times are seconds from the run's start.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol


class Pacer(Protocol):
    """When session number `k` (0-based) is due, or None when no more sessions start.

    The seam of ARCHITECTURE.md ("how long to wait before the next session") as a due time:
    the wait is `due(k) - elapsed`, and the due time itself is the session's intended start,
    which every row records.
    """

    def due(self, k: int) -> float | None:
        """Intended start time of session `k`; called with k = 0, 1, 2, ... in order."""
        ...


class AllAtOnce:
    """Every session at t=0 (`parallel` mode)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def due(self, k: int) -> float | None:
        return 0.0 if k < self.count else None


class Constant:
    """Sessions at a fixed interval of 1/rate."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate

    def due(self, k: int) -> float | None:
        return k * self.interval


class _Renewal:
    """Arrivals with independent gaps drawn from a seeded distribution."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._k = -1
        self._t = 0.0

    def _gap(self) -> float:
        raise NotImplementedError

    def due(self, k: int) -> float | None:
        while self._k < k:
            self._t += self._gap() if self._k >= 0 else 0.0
            self._k += 1
        if k != self._k:
            raise ValueError(f"arrivals are drawn in order: asked for {k} after {self._k}")
        return self._t


class Poisson(_Renewal):
    """Poisson arrivals: exponential gaps of mean 1/rate; the first session at t=0."""

    def __init__(self, rate: float, rng: random.Random) -> None:
        super().__init__(rng)
        self.rate = rate

    def _gap(self) -> float:
        return self.rng.expovariate(self.rate)


class Gamma(_Renewal):
    """Gamma gaps of mean 1/rate; shape (`burstiness`) 1 is Poisson, below 1 is burstier."""

    def __init__(self, rate: float, shape: float, rng: random.Random) -> None:
        super().__init__(rng)
        self.shape = shape
        self.scale = 1.0 / (rate * shape)

    def _gap(self) -> float:
        return self.rng.gammavariate(self.shape, self.scale)


class Recorded:
    """Recorded start times (trace replay), scaled; sorted by the caller."""

    def __init__(self, times_s: Sequence[float], scale: float = 1.0) -> None:
        self.times = times_s
        self.scale = scale

    def due(self, k: int) -> float | None:
        return self.times[k] * self.scale if k < len(self.times) else None
