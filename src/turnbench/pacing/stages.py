"""A run as a list of stages, each with its mode, parameters and duration, one after another.

Why stages are fixed in time: every stage lasts its `duration_s`, so where each begins is
known before the run starts, and every worker labels its rows by the stage in force when the
request was intended, with no message from the coordinator. A request of a session that
continues past its stage's end belongs to the next stage: it met the next stage's load. A
run with no `stages:` is one stage, named `main`, ended by `load:`'s limits as before.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from turnbench.config import RunConfig
from turnbench.pacing.ends import EarlyStop, End
from turnbench.pacing.modes import Mode, mode_end

NS = 1_000_000_000
WARMUP = "warmup"
"""The stage label of requests intended before `load.warmup_s`, left out of the figures."""


@dataclass(frozen=True)
class Step:
    """One stage as the scheduler plays it: its mode, when it starts, what ends it and
    whether its sessions are cut when it does."""

    name: str
    mode: Mode
    """The stage's mode model: its pacer or its users."""
    start_ns: int
    end: End
    cut: bool

    @property
    def end_ns(self) -> int | None:
        """When its time is up (run ns), None when only a count or the workload ends it."""
        if self.end.duration_s is None:
            return None
        return self.start_ns + int(self.end.duration_s * NS)


def steps(cfg: RunConfig) -> list[Step]:
    """The stages of a run in order; one, `main`, for a run with no `stages:`."""
    if cfg.stages is None:
        load = cfg.load
        return [Step("main", load, 0, mode_end(load, load.max_requests), cut=False)]
    out: list[Step] = []
    start = 0
    for name, stage in zip(cfg.stage_names(), cfg.stages, strict=True):
        step = Step(name, stage, start, mode_end(stage), cut=stage.at_end == "cut")
        out.append(step)
        start = step.end_ns or start
    return out


def run_end(cfg: RunConfig, early_stop: EarlyStop | None = None) -> End:
    """What ends the whole run: its duration (the sum of its stages'), its session count (a
    run of one stage), its request limit and an early stop."""
    sessions = cfg.load.sessions if cfg.stages is None else None
    return End(cfg.duration_s, sessions, cfg.load.max_requests, early_stop)


class Timeline:
    """The stage label of a request from its intended time: `warmup` before `load.warmup_s`,
    else the stage in force (the last stage for anything past the run's end, a drain)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.warmup_ns = int(cfg.load.warmup_s * NS)
        plan = steps(cfg)
        self.names = [s.name for s in plan]
        self.starts = [s.start_ns for s in plan]
        self._cuts = [s.end_ns if s.cut and s is not plan[-1] else None for s in plan]

    def at(self, t_ns: int) -> str:
        """The label of work intended at `t_ns` (run ns)."""
        if t_ns < self.warmup_ns:
            return WARMUP
        return self.names[max(0, bisect.bisect_right(self.starts, t_ns) - 1)]

    def cut_at(self, t_ns: int) -> int | None:
        """When a session started at `t_ns` is cut (its stage's end, `at_end: cut`), None
        when it may play on. Why the session itself knows: the coordinator's cut reaches a
        worker some milliseconds late, and a turn due in that gap would be sent in the next
        stage."""
        return self._cuts[max(0, bisect.bisect_right(self.starts, t_ns) - 1)]


def replays_trace(cfg: RunConfig) -> bool:
    """Whether a stage's arrivals are the dataset's recorded start times (`arrival: trace`):
    then the workload is read whole and sorted by them before the run."""
    modes = cfg.stages if cfg.stages is not None else [cfg.load]
    return any(getattr(m, "arrival", None) == "trace" for m in modes)
