"""When a run, a stage or a probe ends: one object for every limit instead of checks of
`duration_s`, `sessions` and `max_requests` spread over the scheduler and the run.

Why one object: a stage (docs/load-modes.md) and a capacity probe end by the same rules as a
run, plus one only a search knows (an early stop: the probe has clearly failed). The rules
read counts and times the caller gives them; like the pacers, nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class EarlyStop(Protocol):
    """Whether the run can stop now because its outcome is already known, read from its
    events.db (the rows written so far) at `elapsed_s` seconds into the run."""

    def verdict(self, db: Path, elapsed_s: float) -> str | None:
        """Why the run stops now (one line for the user), or None to go on."""
        ...


@dataclass(frozen=True)
class End:
    """The limits that end starting new work: time, sessions started, requests sent, and an
    early stop; None where there is no such limit."""

    duration_s: float | None = None
    sessions: int | None = None
    requests: int | None = None
    early_stop: EarlyStop | None = None

    def due_too_late(self, due_s: float) -> bool:
        """Whether a session due at `due_s` (seconds from the start) is past the duration:
        it never starts."""
        return self.duration_s is not None and due_s >= self.duration_s

    def sessions_reached(self, started: int) -> bool:
        """Whether `started` sessions are all the limit allows."""
        return self.sessions is not None and started >= self.sessions
