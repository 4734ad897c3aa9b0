"""What a loader changed in a dataset, counted by reason.

Why counts by reason: a benchmark on a repaired dataset is only honest if the user can see
how much was repaired or dropped and why (`turnbench dataset inspect` prints this).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadReport:
    """Records read, and messages or conversations dropped or repaired, by reason."""

    records: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    repaired: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str, count: int = 1) -> None:
        """Count something left out of the workload."""
        if count:
            self.dropped[reason] += count

    def repair(self, reason: str, count: int = 1) -> None:
        """Count something changed to make it playable."""
        if count:
            self.repaired[reason] += count
