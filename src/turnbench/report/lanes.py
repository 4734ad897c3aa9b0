"""Conversation swim lanes: a sample of sessions, one lane each, every attempt a bar.

Why a sample chosen this way: the question a lane answers is "what happened to this
conversation?", and the ones worth asking about are the slowest and the failed; a few spread
over the run show what an ordinary one looked like. A million-request run still draws at most
`MAX_LANES` lanes, read through the (session, turn, attempt) index.

A bar runs from the send to the last token (the end, without one); a tick marks the first token;
a faint bar before it is the wait from the intended send (schedule lag and the in-flight gate);
the thin line between bars is think time, purple where the turn before asked for a tool.
Each lane runs on its session's own clock, so the lanes line up at their starts.
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
_COLUMNS = (
    "session_id, turn_index, attempt, t_intended_ns, t_sent_ns, t_first_token_ns, "
    "t_last_token_ns, t_end_ns, status, error_kind, error_message, http_status, "
    "prompt_tokens, completion_tokens, cached_tokens, finish_reason, replica"
)


def _pick(conn: sqlite3.Connection) -> list[str]:
    """The slowest sessions, then some with a failed attempt, then some spread over the run."""
    slowest = [
        r[0]
        for r in conn.execute(
            f"SELECT session_id FROM sessions WHERE {MAIN} "
            f"ORDER BY t_end_ns - t_start_ns DESC LIMIT {SLOWEST}"
        )
    ]
    failed = [
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT session_id FROM requests WHERE {MAIN} AND status = 'error' "
            f"LIMIT {FAILED_SESSIONS + SLOWEST}"
        )
    ]
    (n,) = conn.execute(f"SELECT COUNT(*) FROM sessions WHERE {MAIN}").fetchone()
    step = max(1, n // SPREAD)
    spread = [
        r[0]
        for r in conn.execute(
            f"SELECT session_id FROM sessions WHERE {MAIN} AND rowid % {step} = 0 "
            f"LIMIT {SPREAD + SLOWEST}"
        )
    ]
    chosen: list[str] = []
    for group, most in ((slowest, SLOWEST), (failed, FAILED_SESSIONS), (spread, SPREAD)):
        fresh = [s for s in group if s not in chosen][:most]
        chosen += fresh
    return chosen[:MAX_LANES]


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
        chosen = _pick(conn)
        if not chosen:
            return []
        marks = ", ".join("?" * len(chosen))
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM requests WHERE {MAIN} AND session_id IN ({marks}) "
            "ORDER BY session_id, turn_index, attempt",
            chosen,
        ).fetchall()
    finally:
        conn.close()
    lane = {sid: i for i, sid in enumerate(chosen)}
    origin: dict[str, int] = {}
    for r in rows:
        sid = r["session_id"]
        origin[sid] = min(origin.get(sid, r["t_intended_ns"]), r["t_intended_ns"])
    out = []
    for r in sorted(rows, key=lambda r: (lane[r["session_id"]], r["t_sent_ns"])):
        zero = origin[r["session_id"]]
        sent = (r["t_sent_ns"] - zero) / S
        first = r["t_first_token_ns"]
        last = r["t_last_token_ns"] or r["t_end_ns"]
        out.append(
            {
                "session": f"{r['session_id']} @ {zero / S:,.0f} s",
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
            }
        )
    return out


def _gaps(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The time between one attempt's end and the next one's intended send, per lane."""
    gaps: dict[str, list[Any]] = {"session": [], "x0": [], "x1": [], "colour": [], "what": []}
    for a, b in itertools.pairwise(rows):
        if a["session"] != b["session"] or b["intended"] <= a["end"]:
            continue
        tool = a["finish"] == "tool_calls"
        gaps["session"].append(a["session"])
        gaps["x0"].append(a["end"])
        gaps["x1"].append(b["intended"])
        gaps["colour"].append(TOOL if tool else "#bbbbbb")
        gaps["what"].append("tool wait" if tool else "think time")
    return gaps


def lanes_figure(rows: list[dict[str, Any]]) -> Any:
    """The lanes, each on its session's own clock (0: its first intended send), so a session
    of seconds in a run of hours is still seen whole; hover on a bar gives the attempt."""
    sessions = list(dict.fromkeys(r["session"] for r in rows))
    p = new_figure(
        f"Conversation swim lanes ({len(sessions)} sessions: slowest, failed, spread)",
        "time since the session's first intended send (s)",
        "session @ its start in run time",
        height=max(220, 60 + 20 * len(sessions)),
        y_range=FactorRange(*reversed(sessions)),
    )
    p.x_range.start = 0
    gaps = _gaps(rows)
    if gaps["x0"]:
        src = ColumnDataSource(gaps)
        p.segment(
            "x0", "session", "x1", "session", source=src, color="colour", line_width=2, alpha=0.8
        )
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
