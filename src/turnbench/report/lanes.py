"""Conversation swim lanes: a sample of sessions, one lane each, every attempt a bar.

Why a sample chosen this way: the question a lane answers is "what happened to this
conversation?", and the ones worth asking about are the slowest and the failed; a few spread
over the run show what an ordinary one looked like. A million-request run still draws at most
`MAX_LANES` lanes, read through the (session, turn, attempt) index.

A bar runs from the send to the last token (the end, without one); a tick marks the first token;
a faint bar before it is the wait from the intended send (schedule lag and the in-flight gate);
the thin line between bars is think time, purple where the turn waited for a tool, blue where
it waited for the sub-agents it joins. Each lane runs on its session's own clock, so the lanes
line up at their starts.

An agent run (sessions with children) samples agent tasks instead: each task's sessions in tree
order, a sub-agent's lane nested under its parent's (its label's `└──` as long as its depth),
all on the task's clock, so a parent's wait lines up with the children it waited for.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

from bokeh.models import ColumnDataSource, FactorRange

from turnbench.metrics.summary import MAIN, MS, S
from turnbench.record.journal import open_readonly
from turnbench.report.figures import FAILED, MUTED, OK, PALETTE, finish_legend, hover, new_figure

MAX_LANES = 40
SLOWEST, FAILED_SESSIONS, SPREAD = 15, 12, 13
COLOURS = {"ok": OK, "retried": PALETTE[1], "error": FAILED, "cancelled": MUTED}
LABELS = {
    "ok": "ok",
    "retried": "ok after a retry",
    "error": "failed attempt",
    "cancelled": "cancelled",
}
TOOL = PALETTE[4]
JOIN = PALETTE[9]
GAP_LABELS = {"think": "think time", "tool": "tool wait", "sub-agents": "waiting for sub-agents"}
MAX_PER_TASK = 12
"""Sessions of one agent task drawn at most (the root first, then its tree in order)."""
_COLUMNS = (
    "session_id, turn_index, attempt, t_intended_ns, t_sent_ns, t_first_token_ns, "
    "t_last_token_ns, t_end_ns, status, error_kind, error_message, http_status, "
    "prompt_tokens, completion_tokens, cached_tokens, finish_reason, replica"
)


def _pick(conn: sqlite3.Connection, where: str = "1", key: str = "session_id") -> list[str]:
    """The slowest sessions, then some with a failed attempt, then some spread over the run
    (of the sessions `where` selects; `key`: the requests' column naming them)."""
    slowest = [
        r[0]
        for r in conn.execute(
            f"SELECT session_id FROM sessions WHERE {MAIN} AND {where} "
            f"ORDER BY t_end_ns - t_start_ns DESC LIMIT {SLOWEST}"
        )
    ]
    failed = [
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT {key} FROM requests WHERE {MAIN} AND status = 'error' "
            f"LIMIT {FAILED_SESSIONS + SLOWEST}"
        )
    ]
    (n,) = conn.execute(f"SELECT COUNT(*) FROM sessions WHERE {MAIN} AND {where}").fetchone()
    step = max(1, n // SPREAD)
    spread = [
        r[0]
        for r in conn.execute(
            f"SELECT session_id FROM sessions WHERE {MAIN} AND {where} AND rowid % {step} = 0 "
            f"LIMIT {SPREAD + SLOWEST}"
        )
    ]
    chosen: list[str] = []
    for group, most in ((slowest, SLOWEST), (failed, FAILED_SESSIONS), (spread, SPREAD)):
        fresh = [s for s in group if s not in chosen][:most]
        chosen += fresh
    return chosen[:MAX_LANES]


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _has_agents(conn: sqlite3.Connection) -> bool:
    """Whether the run has agent trees (an events.db from before agents has no such column)."""
    if "parent_session_id" not in _columns(conn, "sessions"):
        return False
    return (
        conn.execute(
            "SELECT 1 FROM sessions WHERE parent_session_id IS NOT NULL LIMIT 1"
        ).fetchone()
        is not None
    )


def _tree_order(sid: str) -> tuple[int, ...]:
    """`s3.10.2` sorts after `s3.9`: by the numbers of its path."""
    return tuple(int(part) for part in sid.lstrip("s").split(".") if part.isdigit())


def _pick_tasks(conn: sqlite3.Connection) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """Lanes of an agent run: the slowest, failed and spread tasks (root sessions, picked as
    `_pick` picks sessions), each with up to `MAX_PER_TASK` of its sessions in tree order.
    Returns the lane ids, each lane's task, and each lane's depth."""
    roots = _pick(conn, "parent_session_id IS NULL", "task_id")
    lanes: list[str] = []
    task_of: dict[str, str] = {}
    depth: dict[str, int] = {}
    for root in roots:
        members = conn.execute(
            "SELECT session_id, depth FROM sessions WHERE task_id = ?", (root,)
        ).fetchall()
        members = sorted(members, key=lambda r: _tree_order(r[0]))[:MAX_PER_TASK]
        if len(lanes) + len(members) > MAX_LANES and lanes:
            break
        for sid, d in members:
            lanes.append(sid)
            task_of[sid] = root
            depth[sid] = d
    return lanes, task_of, depth


def _joins(conn: sqlite3.Connection, lanes: list[str]) -> set[tuple[str, int]]:
    """(session, turn) of the drawn sessions' turns that waited for children."""
    if not lanes or "join_turn" not in _columns(conn, "sessions"):
        return set()
    marks = ", ".join("?" * len(lanes))
    return {
        (parent, turn)
        for parent, turn in conn.execute(
            f"SELECT parent_session_id, join_turn FROM sessions WHERE join_turn IS NOT NULL "
            f"AND parent_session_id IN ({marks})",
            lanes,
        )
    }


def _kind(row: sqlite3.Row) -> str:
    if row["status"] == "ok":
        return "retried" if row["attempt"] > 1 else "ok"
    return "cancelled" if row["status"] == "cancelled" else "error"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def lane_rows(db_path: Path) -> list[dict[str, Any]]:
    """Every attempt of the sampled sessions, times in seconds of the run, in lane order."""
    conn = open_readonly(db_path)
    try:
        conn.row_factory = sqlite3.Row
        agents = _has_agents(conn)
        if agents:
            chosen, task_of, depth = _pick_tasks(conn)
        else:
            chosen = _pick(conn)
            task_of, depth = {sid: sid for sid in chosen}, dict.fromkeys(chosen, 0)
        if not chosen:
            return []
        tool_col = ", tool_wait_ns" if "tool_wait_ns" in _columns(conn, "requests") else ""
        marks = ", ".join("?" * len(chosen))
        rows = conn.execute(
            f"SELECT {_COLUMNS}{tool_col} FROM requests WHERE {MAIN} AND session_id IN ({marks}) "
            "ORDER BY session_id, turn_index, attempt",
            chosen,
        ).fetchall()
        joins = _joins(conn, chosen) if agents else set()
    finally:
        conn.close()
    lane = {sid: i for i, sid in enumerate(chosen)}
    origin: dict[str, int] = {}  # of each task: its sessions share its clock
    for r in rows:
        task = task_of[r["session_id"]]
        origin[task] = min(origin.get(task, r["t_intended_ns"]), r["t_intended_ns"])
    out = []
    for r in sorted(rows, key=lambda r: (lane[r["session_id"]], r["t_sent_ns"])):
        sid = r["session_id"]
        zero = origin[task_of[sid]]
        sent = (r["t_sent_ns"] - zero) / S
        first = r["t_first_token_ns"]
        last = r["t_last_token_ns"] or r["t_end_ns"]
        d = depth[sid]
        label = f"{sid} @ {zero / S:,.0f} s" if d == 0 else f"└{'──' * d} {sid}"
        out.append(
            {
                "session": label,
                "turn": r["turn_index"],
                "attempt": r["attempt"],
                "kind": _kind(r),
                "at": r["t_sent_ns"] / S,
                "intended": (r["t_intended_ns"] - zero) / S,
                "sent": sent,
                "first": (first - zero) / S if first is not None else None,
                "last": max((last - zero) / S, sent),
                "end": (r["t_end_ns"] - zero) / S,
                "ttft_ms": (first - r["t_sent_ns"]) / MS if first is not None else None,
                "e2e_ms": (r["t_end_ns"] - r["t_sent_ns"]) / MS,
                "lag_ms": (r["t_sent_ns"] - r["t_intended_ns"]) / MS,
                "status": r["status"],
                "error": _text(r["error_kind"]),
                "message": _text(r["error_message"])[:300],
                "http": _text(r["http_status"]),
                "prompt": _text(r["prompt_tokens"]),
                "output": _text(r["completion_tokens"]),
                "cached": _text(r["cached_tokens"]),
                "finish": _text(r["finish_reason"]),
                "replica": _text(r["replica"]),
                "tool_s": (r["tool_wait_ns"] or 0) / S if tool_col else None,
                "joins": (sid, r["turn_index"]) in joins,
            }
        )
    return out


def _gaps(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The time between one attempt's end and the next one's intended send, per lane: think
    time, the tool's latency (recorded as the turn's `tool_wait_ns`, its last part; or, in an
    events.db from before it, a gap after a reply that asked for tools) and the wait for the
    sub-agents a turn joins (the rest of its gap)."""
    gaps: dict[str, list[Any]] = {"session": [], "x0": [], "x1": [], "colour": [], "what": []}

    def add(lane: str, x0: float, x1: float, colour: str, what: str) -> None:
        if x1 > x0:
            for key, value in zip(gaps, (lane, x0, x1, colour, what), strict=True):
                gaps[key].append(value)

    for a, b in itertools.pairwise(rows):
        if a["session"] != b["session"] or b["intended"] <= a["end"] or b["attempt"] > 1:
            continue
        x0, x1 = a["end"], b["intended"]
        if b["tool_s"] is None:
            tool = a["finish"] == "tool_calls"
            add(a["session"], x0, x1, TOOL if tool else "#bbbbbb", "tool" if tool else "think")
            continue
        start_tool = max(x0, x1 - b["tool_s"])
        if b["joins"]:
            add(a["session"], x0, start_tool, JOIN, "sub-agents")
        else:
            add(a["session"], x0, start_tool, "#bbbbbb", "think")
        add(a["session"], start_tool, x1, TOOL, "tool")
    return gaps


def lanes_figure(rows: list[dict[str, Any]]) -> Any:
    """The lanes, each on its session's own clock (0: its first intended send), so a session
    of seconds in a run of hours is still seen whole; hover on a bar gives the attempt."""
    sessions = list(dict.fromkeys(r["session"] for r in rows))
    nested = any(r["session"].startswith("└") for r in rows)
    what = "agent tasks' sessions, sub-agents under their parent" if nested else "sessions"
    p = new_figure(
        f"Conversation swim lanes ({len(sessions)} {what}: slowest, failed, spread)",
        f"time since the {'task' if nested else 'session'}'s first intended send (s)",
        "session @ its start in run time",
        height=max(220, 60 + 20 * len(sessions)),
        y_range=FactorRange(*reversed(sessions)),
    )
    p.x_range.start = 0
    gaps = _gaps(rows)
    for what, label in GAP_LABELS.items():
        picked = [i for i, w in enumerate(gaps["what"]) if w == what]
        if picked:
            src = ColumnDataSource({k: [v[i] for i in picked] for k, v in gaps.items()})
            p.segment(
                "x0", "session", "x1", "session", source=src, color="colour", line_width=2,
                alpha=0.8, legend_label=label,
            )  # fmt: skip
    waits = [r for r in rows if r["sent"] - r["intended"] > 0]
    if waits:
        p.hbar(
            y=[r["session"] for r in waits],
            left=[r["intended"] for r in waits],
            right=[r["sent"] for r in waits],
            height=0.3,
            color="#f0c36c",
            alpha=0.6,
            legend_label="waiting to send",
        )
    bars = []
    for kind, colour in COLOURS.items():
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        src = ColumnDataSource({k: [r[k] for r in group] for k in group[0]})
        bars.append(
            p.hbar(
                y="session",
                left="sent",
                right="last",
                height=0.62,
                source=src,
                color=colour,
                alpha=0.85,
                legend_label=LABELS[kind],
            )
        )
    firsts = [r for r in rows if r["first"] is not None]
    if firsts:
        p.scatter(
            x=[r["first"] for r in firsts],
            y=[r["session"] for r in firsts],
            marker="dash",
            angle=1.5708,
            size=11,
            color="#111111",
            legend_label="first token",
        )
    hover(
        p,
        bars,
        [
            ("session", "@session, turn @turn, attempt @attempt"),
            ("status", "@status @error @http"),
            ("sent", "@sent{0.000} s into the session, @at{0.000} s into the run"),
            ("TTFT", "@ttft_ms{0.0} ms"),
            ("E2E", "@e2e_ms{0.0} ms"),
            ("schedule lag", "@lag_ms{0.0} ms"),
            ("tokens", "prompt @prompt, cached @cached, output @output"),
            ("finish", "@finish @replica"),
            ("message", "@message"),
        ],
    )
    p.ygrid.grid_line_color = None
    p.yaxis.major_label_text_font_size = "10px"
    finish_legend(p)
    p.add_layout(p.legend[0], "right")  # beside the lanes, never over a bar
    return p
