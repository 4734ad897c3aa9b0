"""Hand-built `events.db` files for the metrics tests: rows whose answers a test can derive.

Why one place: the cache, goodput and outage figures are each checked on a file built row by
row, and all of them need the same schema, run row and session rows; a test states only the
rows that matter to it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from turnbench.client.attempt import Attempt
from turnbench.record.schema import ATTEMPT_COLUMNS, DDL, SESSION_COLUMNS, SessionRecord


def session_record(
    sid: str,
    start_ns: int,
    end_ns: int,
    *,
    outcome: str = "completed",
    stage: str = "main",
    turns_planned: int = 1,
) -> SessionRecord:
    """A session row: intended and started at `start_ns`, ended at `end_ns`."""
    done = outcome == "completed"
    return SessionRecord(
        session_id=sid,
        conversation_id=sid,
        worker=0,
        stage=stage,
        t_intended_ns=start_ns,
        t_start_ns=start_ns,
        t_end_ns=end_ns,
        gate_wait_ns=0,
        turns_planned=turns_planned,
        turns_ok=turns_planned if done else 0,
        turns_failed=0,
        attempts=turns_planned if done else 0,
        dropped_messages=0,
        outcome=outcome,
    )


def write_events_db(
    path: Path,
    attempts: Iterable[Attempt],
    sessions: Iterable[SessionRecord] = (),
    *,
    config: dict[str, Any] | None = None,
    end_reason: str = "completed",
    outages: Iterable[tuple[int, str, int, int, int]] | None = (),
) -> Path:
    """An events.db of these rows; `config` joins a zero warm-up in `runs.config_json`;
    `outages` as (worker, kind, t_ns, failed, waiting), None: an events.db from before the
    table."""
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    conn.execute(
        "INSERT INTO runs (run_id, name, end_reason, target, model, api, config_json) "
        "VALUES ('r', 'r', ?, 'http://sim/v1', 'm', 'chat', ?)",
        (end_reason, json.dumps({"load": {"warmup_s": 0}, **(config or {})}, sort_keys=True)),
    )
    for table, columns, rows in (
        ("requests", ATTEMPT_COLUMNS, attempts),
        ("sessions", SESSION_COLUMNS, sessions),
    ):
        marks = ", ".join("?" * len(columns))
        conn.executemany(
            f"INSERT INTO {table} (run_id, {', '.join(columns)}) VALUES ('r', {marks})",
            [msgspec.structs.astuple(row) for row in rows],
        )
    if outages is None:
        conn.execute("DROP TABLE outages")
    else:
        conn.executemany("INSERT INTO outages VALUES ('r', ?, ?, ?, ?, ?)", list(outages))
    conn.commit()
    conn.close()
    return path
