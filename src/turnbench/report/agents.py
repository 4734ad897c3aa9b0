"""The agent tasks on the report: two tables (console and report.html alike) and two figures,
from the summary's `agents` block; nothing for a run without sub-agents, forks or tool waits.

Why these: the tasks table answers "how long did an agent's work take, and where did the time
go" (model, tool, waiting for sub-agents and the rest); the depth table and its figure answer
"do sub-agents get the same service as the agents that start them"; the per-task bars show
whether the split holds for every task or a few long ones carry it.
"""

from __future__ import annotations

from typing import Any

from bokeh.models import ColumnDataSource, DataRange1d

from turnbench.metrics.agents_model import Agents, DepthRow, KindRow
from turnbench.metrics.model import Dist, Summary
from turnbench.report.figures import (
    FAILED,
    MUTED,
    OK,
    PALETTE,
    TOKENS,
    finish_legend,
    hover,
    new_figure,
    zero_based,
)
from turnbench.report.tables import TextTable, fmt

SPLIT = (("model_s", "model", OK), ("tool_s", "tool", TOKENS), ("waiting_s", "waiting", MUTED))
"""The parts of a task's completion time, in stacking order, with their legend and colour."""


def _pct(ratio: float | None) -> str:
    return fmt(ratio * 100 if ratio is not None else None)


def _spread(d: Dist, digits: int = 2) -> str:
    return " / ".join(fmt(v, digits) for v in (d.p50, d.p90, d.p99, d.max, d.mean))


def _mean_max(d: Dist) -> str:
    return f"{fmt(d.mean, 2)} / {fmt(d.max, 0)}"


def tasks_table(agents: Agents) -> TextTable:
    """The tasks in a few lines: outcomes, throughput, the completion time and its split."""
    outcomes = ", ".join(f"{k} {fmt(n)}" for k, n in agents.outcomes.items())
    shares = agents.time_shares
    parts = (agents.model_s, agents.tool_s, agents.waiting_s)  # in SPLIT's order
    rows = [
        ["tasks (root sessions with their trees)", f"{fmt(agents.tasks)} ({outcomes})"],
        ["completed tasks/h", fmt(agents.tasks_per_h, 1)],
        [
            "sessions / sub-agents / forks, max depth",
            f"{fmt(agents.sessions)} / {fmt(agents.subagents)} / {fmt(agents.forks)}, "
            f"{fmt(agents.max_depth)}",
        ],
        [
            "requests (failed; tasks with a failure)",
            f"{fmt(agents.requests)} ({fmt(agents.failed_requests)}; "
            f"{fmt(agents.tasks_with_failed_requests)})",
        ],
        ["completion s (p50 / p90 / p99 / max / mean)", _spread(agents.completion_s)],
        ["  from the intended start", _spread(agents.completion_from_intended_s)],
        [
            "model / tool / waiting % of completion time",
            " / ".join(_pct(v) for v in (shares.model, shares.tool, shares.waiting)),
        ],
        ["model / tool / waiting s per task (p50)", " / ".join(fmt(d.p50, 2) for d in parts)],
        ["requests per task (mean / max)", _mean_max(agents.requests_per_task)],
        ["sub-agents per task (mean / max)", _mean_max(agents.subagents_per_task)],
        ["forks per task (mean / max)", _mean_max(agents.forks_per_task)],
        ["depth per task (mean / max)", _mean_max(agents.depth_per_task)],
    ]
    title = "Agent tasks (figures per task over completed tasks)"
    return TextTable(title, None, rows)


def _latency_row(label: str, row: DepthRow | KindRow) -> list[str]:
    ttft, e2e = row.ttft_ms, row.e2e_ms
    return [
        label,
        fmt(row.sessions),
        fmt(row.requests_ok),
        fmt(row.requests_failed),
        *(fmt(v) for v in (ttft.p50, ttft.p90, ttft.p99)),
        fmt(e2e.p50),
        fmt(e2e.p99),
    ]


def depth_table(agents: Agents) -> TextTable:
    """TTFT and E2E of successful requests by depth (0: the root agents), then by kind."""
    rows = [_latency_row(f"depth {r.depth}", r) for r in agents.by_depth]
    rows += [_latency_row(kind, r) for kind, r in agents.by_kind.items()]
    header = [
        "depth or kind", "sessions", "ok", "failed", "TTFT p50", "TTFT p90", "TTFT p99",
        "E2E p50", "E2E p99",
    ]  # fmt: skip
    return TextTable("Agent tasks by depth and kind (ms, successful requests)", header, rows)


def agent_tables(summary: Summary) -> list[TextTable]:
    """The agent tables; none when the summary has no `agents` (no agent graph in the run,
    or an events.db from before them)."""
    agents = summary.agents
    if agents is None:
        return []
    return [tasks_table(agents), depth_table(agents)]


def split_figure(agents: Agents | None) -> Any:
    """Each completed task's completion time as one bar, stacked model / tool / waiting, in
    start order; None without completed tasks."""
    if agents is None or not agents.split:
        return None
    rows = agents.split
    cols: dict[str, Any] = {
        "i": list(range(1, len(rows) + 1)),
        "task": [r.task_id for r in rows],
        "start": [r.start_s for r in rows],
        "total": [r.completion_s for r in rows],
    }
    for key, _, _ in SPLIT:
        cols[key] = [getattr(r, key) for r in rows]
    part = " / ".join(f"{name} {_pct(getattr(agents.time_shares, name))} %" for _, name, _ in SPLIT)
    shown = f"{len(rows)} of {agents.completed}"
    p = new_figure(
        f"Agent task completion time: {part} ({shown} completed tasks, in start order)",
        "task (in start order)",
        "seconds",
    )
    bars = p.vbar_stack(
        [key for key, _, _ in SPLIT],
        x="i",
        width=0.8,
        source=ColumnDataSource(cols),
        color=[colour for _, _, colour in SPLIT],
        legend_label=[name for _, name, _ in SPLIT],
        line_color=None,
    )
    zero_based(p)
    p.xaxis.ticker.min_interval = 1
    hover(
        p,
        bars,
        [
            ("task", "@task (started @start{0.00} s)"),
            ("completion", "@total{0.000} s"),
            ("model / tool / waiting", "@model_s{0.000} / @tool_s{0.000} / @waiting_s{0.000} s"),
        ],
    )
    finish_legend(p)
    return p


def ttft_depth_figure(agents: Agents | None) -> Any:
    """TTFT p50, p90 and p99 by depth (0: the root agents); None without a successful
    request."""
    rows = [r for r in (agents.by_depth if agents else []) if r.ttft_ms.count]
    if not rows:
        return None
    cols: dict[str, Any] = {
        "depth": [r.depth for r in rows],
        "n": [r.requests_ok for r in rows],
        "sessions": [r.sessions for r in rows],
    }
    for q in ("p50", "p90", "p99"):
        cols[q] = [r.ttft_ms.at(q) for r in rows]
    src = ColumnDataSource(cols)
    p = new_figure("TTFT by agent depth (0: the root agents)", "depth", "TTFT (ms)", height=260)
    lines = []
    for q, colour in (("p50", OK), ("p90", PALETTE[1]), ("p99", FAILED)):
        lines.append(p.line("depth", q, source=src, color=colour, line_width=2, legend_label=q))
        p.scatter("depth", q, source=src, color=colour, size=7, legend_label=q)
    p.y_range = DataRange1d(start=0, renderers=lines)
    p.x_range = DataRange1d(range_padding=0.2)
    p.xaxis.ticker.min_interval = 1
    hover(
        p,
        lines[:1],
        [
            ("depth", "@depth (@sessions sessions, @n ok requests)"),
            ("TTFT p50 / p90 / p99", "@p50{0.0} / @p90{0.0} / @p99{0.0} ms"),
        ],
        mode="vline",
    )
    finish_legend(p)
    return p
