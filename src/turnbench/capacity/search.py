"""Bracket, then bisect: which load to probe next, as a pure function of the verdicts so far.

Why pure: the rule is the whole algorithm of the search, and every case of it (a pass above
a fail, a repeat that flips, a range that cannot bracket, the probe budget running out) can
then be tested with made-up verdicts in microseconds, with no server and no clock.

The rule (docs/capacity.md): a load *holds* when every probe of it passed. Start at `start`;
while no load failed, grow geometrically (users: at least one more) up to `stop`; once one
failed, bisect between the largest load that held below the smallest that failed (`lo`,
`hi`), until they are one user apart or `hi / lo - 1 <= precision`; then probe `lo` and `hi`
again until each has `1 + repeats` probes. A repeat of `lo` that fails makes `lo` the new
`hi`, and the search goes on below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from turnbench.errors import InputError

Over = Literal["users", "rate"]
Role = Literal["start", "grow", "bisect", "repeat"]
Kind = Literal["holds", "fails_at_start", "holds_at_max", "not_bracketed"]
RATE_DIGITS = 3
"""Significant digits of a probed session rate: 2.83 sessions/s, not 2.8284271."""


@dataclass(frozen=True)
class Space:
    """Where and how far the search looks, and how many probes it may spend."""

    over: Over
    start: float
    stop: float
    growth: float = 2.0
    precision: float = 0.05
    repeats: int = 1
    max_probes: int = 20

    def check(self) -> None:
        """Refuse a range the search cannot walk, in the words of the flags."""
        if not self.start > 0:
            raise InputError(f"--start must be above 0, got {self.start:g}")
        if self.over == "users" and not (
            float(self.start).is_integer() and float(self.stop).is_integer()
        ):
            raise InputError(
                f"a user count is a whole number: --start {self.start:g}, --max {self.stop:g}"
            )
        if self.start > self.stop:
            raise InputError(
                f"--start {self.start:g} is above --max {self.stop:g}: the range is empty"
            )
        if not self.growth > 1:
            raise InputError(f"--growth must be above 1, got {self.growth:g}")
        if not 0 < self.precision <= 1:
            raise InputError(f"--precision must be in (0, 1], got {self.precision:g}")
        if self.repeats < 0:
            raise InputError(f"--repeats must be 0 or more, got {self.repeats}")
        if self.max_probes < 1:
            raise InputError(f"--max-probes must be at least 1, got {self.max_probes}")


@dataclass(frozen=True)
class Trial:
    """One probe's load and whether it met every objective."""

    load: float
    passed: bool


@dataclass(frozen=True)
class Step:
    """The next probe: its load and why it is probed."""

    load: float
    role: Role


@dataclass(frozen=True)
class Conclusion:
    """Where the search ended. `holds`: the largest load that held below `fails`, the
    smallest that failed (None when that side was never found). `narrowed`: the bracket
    reached the precision; `repeated`: its two ends have every repeat asked for."""

    kind: Kind
    holds: float | None
    fails: float | None
    narrowed: bool = False
    repeated: bool = False
    out_of_probes: bool = False


def verdicts(trials: Sequence[Trial]) -> dict[float, bool]:
    """Each load probed and whether it held (every probe of it passed)."""
    out: dict[float, bool] = {}
    for trial in trials:
        out[trial.load] = out.get(trial.load, True) and trial.passed
    return out


def bracket(trials: Sequence[Trial]) -> tuple[float | None, float | None]:
    """(`lo`, `hi`): the smallest load that failed, and the largest that held below it.

    Why below it: a load above a failure that passed once is noise around the boundary,
    not capacity; the answer must be a load that held where nothing lower failed.
    """
    held = verdicts(trials)
    failed = [load for load, ok in held.items() if not ok]
    hi = min(failed) if failed else None
    below = [load for load, ok in held.items() if ok and (hi is None or load < hi)]
    return (max(below) if below else None), hi


def grow(space: Space, load: float) -> float:
    """The next load of the bracket phase: `growth` times more, at most `stop` (users: the
    whole number at or above, 100 x 1.04 being 104 and not the 105 of a float's last bit)."""
    if space.over == "users":
        return float(min(space.stop, max(load + 1, math.ceil(load * space.growth - 1e-9))))
    return min(space.stop, _round_rate(load * space.growth))


def midpoint(space: Space, lo: float, hi: float) -> float | None:
    """The load between `lo` and `hi` to probe next; None when the bracket is narrow enough.

    Users: the integer midpoint, down to one user apart. Rates: the geometric mean, since
    the precision is relative, until `hi / lo - 1 <= precision`.
    """
    if hi / lo - 1 <= space.precision:
        return None
    if space.over == "users":
        mid = float((int(lo) + int(hi)) // 2)
    else:
        mid = _round_rate(math.sqrt(lo * hi))
    return mid if lo < mid < hi else None


def _round_rate(rate: float) -> float:
    digits = RATE_DIGITS - 1 - math.floor(math.log10(rate))
    return round(rate, digits)


def next_step(space: Space, trials: Sequence[Trial], spent: int | None = None) -> Step | Conclusion:
    """The next probe, or where the search ends, from the verdicts so far (in order).

    `spent`: probes run so far against `max_probes`, when some of them gave no verdict of
    their own (a short probe run again for longer); `len(trials)` otherwise.
    """
    if not trials:
        return Step(space.start, "start")
    lo, hi = bracket(trials)
    if lo is None:
        return Conclusion("fails_at_start", None, hi)
    out = (len(trials) if spent is None else spent) >= space.max_probes
    if hi is None:
        if lo >= space.stop:
            return Conclusion("holds_at_max", lo, None)
        if out:
            return Conclusion("not_bracketed", lo, None, out_of_probes=True)
        return Step(grow(space, lo), "grow")
    mid = midpoint(space, lo, hi)
    if mid is not None:
        if out:
            return Conclusion("holds", lo, hi, out_of_probes=True)
        return Step(mid, "bisect")
    counts = {load: sum(t.load == load for t in trials) for load in (lo, hi)}
    for load in (lo, hi):
        if counts[load] < 1 + space.repeats:
            if out:
                return Conclusion("holds", lo, hi, narrowed=True, out_of_probes=True)
            return Step(load, "repeat")
    return Conclusion("holds", lo, hi, narrowed=True, repeated=True)
