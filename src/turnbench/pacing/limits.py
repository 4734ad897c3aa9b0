"""When a run ends for lack of work: the default limit of an endless workload, and the notice
for a finite one that ran out before a limit the user asked for.

Why here: `pacing/` decides when a run ends; these rules read only the config and two facts
of the run (when the workload ran out, how many sessions started), so they need no clock.
"""

from __future__ import annotations

from typing import Any

from turnbench.config import RunConfig
from turnbench.workload.config import SyntheticAgentWorkload, SyntheticWorkload

NS = 1_000_000_000
DEFAULT_SESSIONS = 100
"""Sessions a run with an endless workload plays when nothing else limits it."""


def endless(cfg: RunConfig) -> bool:
    """Whether the workload never runs out: synthetic (conversations or agents) without a
    count, or cycled."""
    workload = cfg.workload
    if isinstance(workload, SyntheticWorkload) and workload.conversations is None:
        return True
    if isinstance(workload, SyntheticAgentWorkload) and workload.agents is None:
        return True
    return workload.cycle


def resolve_limits(cfg: RunConfig) -> tuple[RunConfig, str | None]:
    """Give an endless workload a limit when the user set none; the line that says so.

    Why a default rather than an error: `turnbench run` with no flags must run and end; a
    generated workload is endless so that `--duration` alone decides. Mode parallel starts
    every session at once, so it always needs a count.
    """
    load = cfg.load
    if not endless(cfg) or load.sessions is not None or cfg.stages is not None:
        return cfg, None  # every stage has a duration, and a parallel one its count
    no_limit = load.duration_s is None and load.max_requests is None
    if not (no_limit or load.mode == "parallel"):
        return cfg, None
    cfg = cfg.model_copy(deep=True)
    cfg.load.sessions = DEFAULT_SESSIONS
    why = "mode parallel starts every session at once" if not no_limit else "no limit is set"
    return cfg, (
        f"{why}: playing {DEFAULT_SESSIONS} sessions of the endless workload "
        "(set --sessions, --duration or --max-requests)"
    )


def ran_out_notice(
    cfg: RunConfig, ran_out_ns: int, started: int, *, requests_reached: bool
) -> tuple[str, dict[str, Any]] | None:
    """The notice (message, figures) for a workload that ran out at `ran_out_ns` (run clock)
    after `started` sessions, before a limit the user asked for; None when none was missed."""
    load = cfg.load
    at_s = ran_out_ns / NS
    unmet = []
    if cfg.duration_s is not None and at_s < cfg.duration_s:
        unmet.append(f"the requested {cfg.duration_s:g} s")
    if cfg.stages is None and load.sessions is not None and started < load.sessions:
        unmet.append(f"the requested {load.sessions} sessions")
    if load.max_requests is not None and not requests_reached:
        unmet.append(f"the requested {load.max_requests} requests")
    if not unmet:
        return None
    repeat = "workload.cycle: true (--set workload.cycle=true)"
    if isinstance(cfg.workload, SyntheticWorkload):
        repeat += ", or leave workload.conversations unset"
    elif isinstance(cfg.workload, SyntheticAgentWorkload):
        repeat += ", or leave workload.agents unset"
    message = (
        f"the workload ran out at {at_s:.1f} s after {started} conversations, "
        f"before {' and '.join(unmet)}; to repeat it set {repeat}"
    )
    return message, {"at_s": at_s, "conversations": started, "repeat_key": repeat}
