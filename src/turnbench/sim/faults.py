"""Fault injection: which misbehaviour, if any, a request gets.

Why one seeded generator for the whole server: a run with the same seed and the same request
order sees the same faults, and every kind is drawn independently at its own rate.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from turnbench.sim.config import FaultKind

STREAM_ONLY = frozenset({"reset", "malformed", "truncate", "stall_mid"})
"""Faults that only make sense inside an SSE stream; non-streaming requests skip them."""

_PRECEDENCE = ("http500", "http429", "reset", "malformed", "truncate")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults drawn for one request.

    `fatal` is the one fault that decides how the request ends (an HTTP error or a broken
    stream), or None; `stall` delays the first token and can combine with any stream fault.
    """

    fatal: str | None = None
    stall: bool = False
    stall_mid: bool = False
    """Hold the stream for `stall_s` after a few tokens (a client's idle timeout)."""

    @property
    def outcome(self) -> str:
        """The `turnbench_sim_requests_total` outcome label, if the request gets this far."""
        if self.fatal is not None:
            return self.fatal
        if self.stall:
            return "stall"
        return "stall_mid" if self.stall_mid else "ok"


NO_FAULT = FaultPlan()


class FaultInjector:
    """Draws a `FaultPlan` per request from the configured rates."""

    def __init__(self, rates: Mapping[FaultKind, float], seed: int) -> None:
        self._rates = {k: r for k, r in rates.items() if r > 0}
        self._rng = random.Random(f"turnbench-sim-faults:{seed}")

    def draw(self, streaming: bool) -> FaultPlan:
        """Draw every configured kind independently; the first drawn in precedence wins."""
        if not self._rates:
            return NO_FAULT
        rng = self._rng
        drawn = {k for k, r in self._rates.items() if rng.random() < r}
        if not streaming:
            drawn -= STREAM_ONLY
        fatal = next((k for k in _PRECEDENCE if k in drawn), None)
        stall = "stall" in drawn
        stall_mid = "stall_mid" in drawn
        if fatal is None and not stall and not stall_mid:
            return NO_FAULT
        return FaultPlan(fatal=fatal, stall=stall, stall_mid=stall_mid)
