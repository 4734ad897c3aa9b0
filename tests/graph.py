"""Rebuild agent graphs from events.db rows and check that no request started early."""

from __future__ import annotations

import itertools
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

Row = sqlite3.Row | dict[str, Any]


def check_dependencies(sessions: Sequence[Row], attempts: Sequence[Row]) -> int:
    """Assert that every request started after everything it depends on ended: the previous
    turn of its own session (one request in flight per session), the parent turn a child
    follows, and every child a parent turn joins. Returns how many dependencies were checked
    (so a caller can tell the graph was there at all)."""
    by_session: dict[str, dict[int, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for a in attempts:
        by_session[a["session_id"]][a["turn_index"]].append(a)
    rows = {s["session_id"]: s for s in sessions}
    checked = 0

    def first_sent(sid: str, turn: int) -> int | None:
        atts = by_session.get(sid, {}).get(turn)
        return min(a["t_sent_ns"] for a in atts) if atts else None

    def last_end(sid: str, turn: int) -> int | None:
        atts = by_session.get(sid, {}).get(turn)
        return max(a["t_end_ns"] for a in atts) if atts else None

    for sid, turns in by_session.items():
        ordered = sorted(turns)
        for prev, nxt in itertools.pairwise(ordered):
            end, sent = last_end(sid, prev), first_sent(sid, nxt)
            assert end is not None and sent is not None
            assert sent >= end, f"{sid}: turn {nxt} sent before turn {prev} ended"
            checked += 1
        for turn, atts in turns.items():
            ordered_atts = sorted(atts, key=lambda a: a["attempt"])
            for a, b in itertools.pairwise(ordered_atts):
                assert b["t_sent_ns"] >= a["t_end_ns"], f"{sid} turn {turn}: attempts overlap"
    for s in sessions:
        parent = s["parent_session_id"]
        if parent is None:
            continue
        assert parent in rows, f"{s['session_id']}: parent {parent} has no sessions row"
        sent = first_sent(s["session_id"], min(by_session[s["session_id"]], default=1))
        after = s["after_turn"]
        if sent is not None:
            start = rows[parent]["t_start_ns"] if after == 0 else last_end(parent, after)
            assert start is not None, f"{s['session_id']}: parent turn {after} never ran"
            assert sent >= start, f"{s['session_id']}: started before parent turn {after} ended"
            checked += 1
        join = s["join_turn"]
        if join is not None:
            joined = first_sent(parent, join)
            if joined is not None:
                assert joined >= s["t_end_ns"], (
                    f"{parent}: turn {join} sent before its child {s['session_id']} ended"
                )
                checked += 1
        assert rows[parent]["t_end_ns"] >= s["t_end_ns"], f"{parent} ended before its child"
    return checked
