"""The agent tasks section of the summary (`agents`), typed: a root session and every
sub-agent and fork below it, judged as one unit of work.

Why its own module: `metrics/agents.py` builds these from events.db and the console, the
HTML report and `compare` read them; the field names are the keys of docs/metrics.md
("Agent tasks"), so summary.json's `agents` is unchanged.
"""

from __future__ import annotations

from turnbench.metrics.model_base import Dist, Model


class TimeShares(Model):
    """Σ part / Σ completion time over completed tasks; each None without any."""

    model: float | None
    tool: float | None
    waiting: float | None


class KindRow(Model):
    """The sessions of one kind (`session`, `subagent`, `fork`) and their attempts'
    latencies from the send (successful attempts, over all tasks)."""

    sessions: int
    requests_ok: int
    requests_failed: int
    ttft_ms: Dist
    e2e_ms: Dist


class DepthRow(Model):
    """The sessions at one depth (0 the root) and their attempts' latencies, as `KindRow`."""

    depth: int
    sessions: int
    requests_ok: int
    requests_failed: int
    ttft_ms: Dist
    e2e_ms: Dist


class TaskSplit(Model):
    """One completed task of the report's per-task plot: its start (run seconds) and its
    completion time split into model, tool and waiting time, seconds."""

    task_id: str
    start_s: float
    completion_s: float
    model_s: float
    tool_s: float
    waiting_s: float


class Agents(Model):
    """The run's agent tasks: outcomes, counts, completion time and where it went, and
    latencies by depth and kind. Distributions are over completed tasks, counts over all."""

    tasks: int
    outcomes: dict[str, int]
    completed: int
    tasks_per_h: float | None
    """Completed tasks per hour of the measured window; None when the window is 0."""
    sessions: int
    subagents: int
    forks: int
    max_depth: int
    requests: int
    failed_requests: int
    tasks_with_failed_requests: int
    completion_s: Dist
    completion_from_intended_s: Dist
    model_s: Dist
    tool_s: Dist
    waiting_s: Dist
    time_shares: TimeShares
    requests_per_task: Dist
    sessions_per_task: Dist
    subagents_per_task: Dist
    forks_per_task: Dist
    depth_per_task: Dist
    by_depth: list[DepthRow]
    by_kind: dict[str, KindRow]
    """Keyed by kind, for the kinds the run has."""
    split: list[TaskSplit]
    """All completed tasks in start order, or MAX_SHOWN_TASKS spread over the run."""
