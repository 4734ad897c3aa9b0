"""Agent tasks: a root session and every sub-agent and fork below it, judged as one unit of
work (formulas in docs/metrics.md, section "Agent tasks").

Why a task, not a session: an agent's user waits for the whole tree. Its sub-agents run in
parallel, its parent waits for them, and its turns wait for tools, so neither a request's
latency nor a session's duration says how long the work took or where the time went. A
task's completion time is split into model time (a request of the task in flight), tool time
(waiting for a tool, no request in flight) and the rest (waiting for sub-agents, the client's
caps, think time or a recorded schedule).

Why interval unions in numpy: the parallel requests of one task overlap, so their time is the
length of the union of their intervals, not a sum. The union of every task at once is one
sort and one cumulative sum (`union_lengths`), never a Python loop over rows: a run of a
million requests is summarised in seconds.

Which rows: the tasks whose root session is a main-stage row of the `sessions` table, with
every session and attempt of the tree (a tree starts with its root, so its children are main
stage too); a task whose root row is missing (a killed run) is left out.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from turnbench.metrics.agents_model import Agents, DepthRow, KindRow, TaskSplit, TimeShares
from turnbench.metrics.columns import read_matrix
from turnbench.metrics.stats import describe
from turnbench.record.journal import open_readonly

MS = 1e6  # nanoseconds per millisecond
S = 1e9  # nanoseconds per second
KINDS = ("session", "subagent", "fork")
"""The `sessions.kind` values, in the order the report shows them."""
OUTCOME_ORDER = ("unfinished", "aborted", "context_full")
"""A task that did not complete takes the first of these that one of its sessions has."""
MAX_SHOWN_TASKS = 300
"""At most this many tasks in `split`, the report's per-task plot (spread over the run)."""

_SESSIONS = """
SELECT s.rowid, root.rowid, s.depth, s.kind, s.outcome
FROM sessions s JOIN sessions root ON root.session_id = s.task_id
WHERE root.parent_session_id IS NULL AND root.stage != 'warmup' ORDER BY s.rowid
"""
_ROOTS = """
SELECT rowid, session_id, t_intended_ns, t_start_ns, t_end_ns FROM sessions
WHERE parent_session_id IS NULL AND stage != 'warmup' ORDER BY rowid
"""
_REQUESTS = """
SELECT s.rowid, r.status = 'ok', r.status = 'error', r.t_intended_ns, r.t_sent_ns,
       r.t_first_token_ns, r.t_end_ns, r.tool_wait_ns
FROM requests r JOIN sessions s ON s.session_id = r.session_id
WHERE s.task_id IN (SELECT session_id FROM sessions
                    WHERE parent_session_id IS NULL AND stage != 'warmup')
"""


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def has_agent_columns(conn: sqlite3.Connection) -> bool:
    """Whether the file records agent graphs (an events.db from before them does not)."""
    return {"task_id", "tool_wait_ns"} <= _columns(conn, "requests") and {
        "task_id",
        "kind",
        "depth",
    } <= _columns(conn, "sessions")


def is_agentic(conn: sqlite3.Connection) -> bool:
    """Whether a main-stage session is a sub-agent or fork, or waited for a tool: a run of
    plain conversations has no agent tasks to show."""
    row = conn.execute(
        "SELECT 1 FROM sessions WHERE stage != 'warmup' AND (depth > 0 OR tool_wait_ns > 0) LIMIT 1"
    ).fetchone()
    return row is not None


def union_lengths(owner: np.ndarray, start: np.ndarray, end: np.ndarray, n: int) -> np.ndarray:
    """Per owner (0..n-1), the length of the union of its intervals [start, end].

    One sweep for all owners: every interval opens (+1) at its start and closes (−1) at its
    end; sorted by owner then time, the running sum is how many of the owner's intervals are
    open after each event (each owner's steps sum to 0, so one cumulative sum serves them
    all), and the time to the next event counts where that is above 0.
    """
    keep = end > start
    owner, start, end = owner[keep], start[keep], end[keep]
    if not owner.size:
        return np.zeros(n)
    times = np.concatenate((start, end))
    owners = np.concatenate((owner, owner))
    steps = np.concatenate((np.ones(owner.size, np.int64), -np.ones(owner.size, np.int64)))
    order = np.lexsort((times, owners))
    times, owners, steps = times[order], owners[order], steps[order]
    covered = np.where(np.cumsum(steps)[:-1] > 0, np.diff(times), 0.0)
    return np.bincount(owners[:-1], weights=covered, minlength=n)


def _outcomes(task: np.ndarray, outcome: np.ndarray, n: int) -> np.ndarray:
    """Each task's outcome: completed when every session of it completed, else the first of
    OUTCOME_ORDER that one of them has (any other outcome counts as aborted)."""
    out = np.full(n, "completed", dtype=object)
    known = {"completed", *OUTCOME_ORDER}
    outcome = np.where(np.isin(outcome, list(known)), outcome, "aborted")
    for name in reversed(OUTCOME_ORDER):
        out[np.unique(task[outcome == name])] = name
    return out


def _latencies(rows: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """TTFT and E2E (from the send) of the successful attempts `mask` selects, with counts:
    the fields a `DepthRow` and a `KindRow` share."""
    ok = rows[mask & (rows[:, 1] == 1)]
    return {
        "requests_ok": len(ok),
        "requests_failed": int((mask & (rows[:, 2] == 1)).sum()),
        "ttft_ms": describe((ok[:, 5] - ok[:, 4]) / MS),
        "e2e_ms": describe((ok[:, 6] - ok[:, 4]) / MS),
    }


def _split_rows(
    ids: list[str], done: np.ndarray, start_s: np.ndarray, parts: dict[str, np.ndarray]
) -> list[TaskSplit]:
    """The completed tasks of the per-task plot, in start order: all of them, or
    MAX_SHOWN_TASKS spread evenly over the run."""
    chosen = np.flatnonzero(done)
    chosen = chosen[np.argsort(start_s[chosen], kind="stable")]
    if chosen.size > MAX_SHOWN_TASKS:
        chosen = chosen[np.linspace(0, chosen.size - 1, MAX_SHOWN_TASKS).round().astype(int)]
    return [
        TaskSplit(
            task_id=ids[i],
            start_s=float(start_s[i]),
            **{name: float(values[i]) for name, values in parts.items()},
        )
        for i in chosen.tolist()
    ]


def _time_split(
    req: np.ndarray, task: np.ndarray, t_start: np.ndarray, t_end: np.ndarray
) -> dict[str, np.ndarray]:
    """Each task's completion time and its model, tool and waiting parts, seconds: the
    attempts' intervals and tool waits clipped to the task's span, model time their union
    of attempts, tool time what the tool waits add to it, waiting the rest."""
    n = t_start.size
    sent = req[:, 4] > 0
    tool = req[:, 7] > 0
    owners = np.concatenate((task[sent], task[tool]))
    starts = np.maximum(
        np.concatenate((req[sent, 4], req[tool, 3] - req[tool, 7])), t_start[owners]
    )
    ends = np.minimum(np.concatenate((req[sent, 6], req[tool, 3])), t_end[owners])
    m = int(sent.sum())  # the attempts come first, the tool waits after
    model = union_lengths(owners[:m], starts[:m], ends[:m], n)
    busy = union_lengths(owners, starts, ends, n)
    completion = (t_end - t_start) / S
    return {
        "completion_s": completion,
        "model_s": model / S,
        "tool_s": (busy - model) / S,
        "waiting_s": np.maximum(0.0, completion - busy / S),
    }


def describe_agents(conn: sqlite3.Connection, window_s: float) -> Agents | None:
    """The run's agent tasks as summary.json shows them (keys in docs/metrics.md); None for
    an events.db without agent columns, or a run with no sub-agent, fork or tool wait.
    `tasks_per_h` is over the run's measured window `window_s`."""
    if not has_agent_columns(conn) or not is_agentic(conn):
        return None
    roots = conn.execute(_ROOTS).fetchall()
    n = len(roots)
    if not n:
        return None
    root_rowid = np.array([r[0] for r in roots], dtype=np.float64)
    ids = [r[1] for r in roots]
    intended, t_start, t_end = (np.array([r[k] for r in roots], np.float64) for k in (2, 3, 4))

    srows = conn.execute(_SESSIONS).fetchall()
    s_rowid = np.array([r[0] for r in srows], dtype=np.float64)
    s_task = np.searchsorted(root_rowid, np.array([r[1] for r in srows], dtype=np.float64))
    s_depth = np.array([r[2] for r in srows], dtype=np.int64)
    s_kind = np.array([r[3] for r in srows], dtype=object)
    outcome = _outcomes(s_task, np.array([r[4] for r in srows], dtype=object), n)

    req = read_matrix(conn, _REQUESTS, 8)
    r_session = np.searchsorted(s_rowid, req[:, 0])
    r_task = s_task[r_session]
    parts = _time_split(req, r_task, t_start, t_end)
    completion = parts["completion_s"]
    done = outcome == "completed"
    per_task = {
        "requests": np.bincount(r_task, minlength=n),
        "failed": np.bincount(r_task, weights=req[:, 2], minlength=n),
        "subagents": np.bincount(s_task, weights=s_kind == "subagent", minlength=n),
        "forks": np.bincount(s_task, weights=s_kind == "fork", minlength=n),
        "sessions": np.bincount(s_task, minlength=n),
    }
    depth = np.zeros(n, dtype=np.int64)
    np.maximum.at(depth, s_task, s_depth)
    total = float(parts["completion_s"][done].sum())
    kinds, counts = np.unique(outcome, return_counts=True)
    r_depth, r_kind = s_depth[r_session], s_kind[r_session]
    shares = {
        key: float(parts[f"{key}_s"][done].sum()) / total if total else None
        for key in ("model", "tool", "waiting")
    }
    return Agents(
        tasks=n,
        outcomes={str(k): int(c) for k, c in zip(kinds, counts, strict=True)},
        completed=int(done.sum()),
        tasks_per_h=float(done.sum()) / window_s * 3600 if window_s else None,
        sessions=len(srows),
        subagents=int(per_task["subagents"].sum()),
        forks=int(per_task["forks"].sum()),
        max_depth=int(depth.max()),
        requests=len(req),
        failed_requests=int(per_task["failed"].sum()),
        tasks_with_failed_requests=int((per_task["failed"] > 0).sum()),
        completion_s=describe(completion[done]),
        completion_from_intended_s=describe((t_end - intended)[done] / S),
        model_s=describe(parts["model_s"][done]),
        tool_s=describe(parts["tool_s"][done]),
        waiting_s=describe(parts["waiting_s"][done]),
        time_shares=TimeShares(**shares),
        requests_per_task=describe(per_task["requests"][done]),
        sessions_per_task=describe(per_task["sessions"][done]),
        subagents_per_task=describe(per_task["subagents"][done]),
        forks_per_task=describe(per_task["forks"][done]),
        depth_per_task=describe(depth[done]),
        by_depth=[
            DepthRow(depth=d, sessions=int((s_depth == d).sum()), **_latencies(req, r_depth == d))
            for d in np.unique(s_depth).tolist()
        ],
        by_kind={
            kind: KindRow(sessions=int((s_kind == kind).sum()), **_latencies(req, r_kind == kind))
            for kind in KINDS
            if (s_kind == kind).any()
        },
        split=_split_rows(ids, done, t_start / S, parts),
    )


def agents_of(db_path: Path, window_s: float) -> Agents | None:
    """`describe_agents` on the run's events.db, opened for this alone (the summary needs
    its measured window first, which it computes after reading the requests)."""
    conn = open_readonly(db_path)
    try:
        return describe_agents(conn, window_s)
    finally:
        conn.close()
