"""How long do the agent-task metrics take on a large run? A hand-built events.db of N
requests (default 1,000,000) shaped like agents, then `metrics.agents.agents_of` on it, timed.

Each task: a root of 10 turns that fans out 3 sub-agents after its first turn and waits for
them at its third, each sub-agent 10 turns with a tool wait before every later turn; 40
requests and 4 sessions a task, 32 tasks in flight at a time. Why hand-built: the metrics
read only the file, so rows of this shape measure the same thing as a run of hours.

    .venv/bin/python bench/agent_metrics.py [N] [--repeat R] [--keep FILE]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from turnbench.metrics.agents import agents_of
from turnbench.record.schema import ATTEMPT_COLUMNS, DDL, INDEXES, SESSION_COLUMNS

NS = 1_000_000_000
TURNS, SUBAGENTS, LANES = 10, 3, 32
COLUMN = {c: i for i, c in enumerate(ATTEMPT_COLUMNS)}
SESSION = {c: i for i, c in enumerate(SESSION_COLUMNS)}


def _attempt(
    sid: str, task: str, depth: int, turn: int, t: float, e2e: float, tool: float
) -> tuple:
    row: list[object] = [None] * len(ATTEMPT_COLUMNS)
    values = {
        "stage": "main", "worker": 0, "session_id": sid, "conversation_id": sid,
        "turn_index": turn, "attempt": 1, "t_intended_ns": int(t * NS),
        "t_sent_ns": int((t + 0.0005) * NS), "t_first_token_ns": int((t + 0.05) * NS),
        "t_end_ns": int((t + e2e) * NS), "gate_wait_ns": 0, "chunk_gaps": b"",
        "content_chunks": 50, "prompt_tokens": 1000, "completion_tokens": 50,
        "token_source": "usage", "context_messages": 2 * turn, "dropped_messages": 0,
        "status": "ok", "reconnects": 0, "task_id": task,
        "parent_session_id": None if depth == 0 else task, "depth": depth,
        "branch": 0 if depth == 0 else int(sid.rsplit(".", 1)[1]),
        "tool_wait_ns": int(tool * NS),
    }  # fmt: skip
    for key, value in values.items():
        row[COLUMN[key]] = value
    return tuple(row)


def _session(sid: str, task: str, depth: int, start: float, end: float, tool: float) -> tuple:
    row: list[object] = [None] * len(SESSION_COLUMNS)
    values = {
        "session_id": sid, "conversation_id": sid, "worker": 0, "stage": "main",
        "t_intended_ns": int(start * NS), "t_start_ns": int(start * NS), "t_end_ns": int(end * NS),
        "gate_wait_ns": 0, "turns_planned": TURNS, "turns_ok": TURNS, "turns_failed": 0,
        "attempts": TURNS, "dropped_messages": 0, "outcome": "completed", "task_id": task,
        "parent_session_id": None if depth == 0 else task, "depth": depth,
        "branch": 0 if depth == 0 else int(sid.rsplit(".", 1)[1]),
        "kind": "session" if depth == 0 else "subagent", "after_turn": None if depth == 0 else 1,
        "join_turn": None if depth == 0 else 3, "children": 0 if depth else SUBAGENTS,
        "tool_wait_ns": int(tool * NS),
    }  # fmt: skip
    for key, value in values.items():
        row[SESSION[key]] = value
    return tuple(row)


def _task(
    task: str, start: float, rng: np.random.Generator
) -> tuple[list[tuple], list[tuple], float]:
    """One task's rows from `start`; returns them and its end."""
    attempts: list[tuple] = []
    sessions: list[tuple] = []
    e2e = rng.uniform(0.3, 1.5, TURNS * (SUBAGENTS + 1))
    t = start
    attempts.append(_attempt(task, task, 0, 1, t, e2e[0], 0.0))
    fan_out = t + e2e[0]
    joined = fan_out
    for b in range(1, SUBAGENTS + 1):
        sid, u, tools = f"{task}.{b}", fan_out, 0.0
        for turn in range(1, TURNS + 1):
            tool = 0.0 if turn == 1 else float(rng.exponential(0.5))
            u += tool
            tools += tool
            d = e2e[b * TURNS + turn - 1]
            attempts.append(_attempt(sid, task, 1, turn, u, d, tool))
            u += d
        sessions.append(_session(sid, task, 1, fan_out, u, tools))
        joined = max(joined, u)
    t = fan_out + 0.2
    attempts.append(_attempt(task, task, 0, 2, t, e2e[1], 0.0))
    t = max(t + e2e[1], joined)
    for turn in range(3, TURNS + 1):
        attempts.append(_attempt(task, task, 0, turn, t, e2e[turn - 1], 0.0))
        t += e2e[turn - 1] + 0.5
    sessions.append(_session(task, task, 0, start, t, 0.0))
    return attempts, sessions, t


def build(db: Path, n: int) -> int:
    """The events.db of about `n` requests; returns how many it holds."""
    rng = np.random.default_rng(1)
    conn = sqlite3.connect(db)
    conn.executescript(DDL)
    conn.execute(
        "INSERT INTO runs (run_id, name, end_reason, target, model, api, config_json) "
        "VALUES ('big', 'big', 'completed', 'http://127.0.0.1:1/v1', 'm', 'chat', ?)",
        (json.dumps({"load": {"mode": "users", "users": LANES, "warmup_s": 0}}),),
    )
    clock = np.full(LANES, 1.0)
    written = task = 0
    insert_attempts = (
        f"INSERT INTO requests (run_id, {', '.join(ATTEMPT_COLUMNS)}) "
        f"VALUES ('big', {', '.join('?' * len(ATTEMPT_COLUMNS))})"
    )
    insert_sessions = (
        f"INSERT INTO sessions (run_id, {', '.join(SESSION_COLUMNS)}) "
        f"VALUES ('big', {', '.join('?' * len(SESSION_COLUMNS))})"
    )
    while written < n:
        lane = task % LANES
        attempts, sessions, clock[lane] = _task(f"s{task}", clock[lane], rng)
        task += 1
        written += len(attempts)
        conn.executemany(insert_attempts, attempts)
        conn.executemany(insert_sessions, sessions)
    conn.executescript(INDEXES)  # as a run's end builds it
    conn.commit()
    conn.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many")
    parser.add_argument("--keep", type=Path, help="write the events.db here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.keep or Path(tmp) / "events.db"
        if not db.exists():
            t0 = time.perf_counter()
            written = build(db, args.n)
            print(f"built {written:,} requests in {time.perf_counter() - t0:.1f} s: {db}")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            agents = agents_of(db, 3600.0)
            times.append(time.perf_counter() - t0)
        assert agents is not None
        print(
            f"agents_of: best {min(times):.2f} s of {args.repeat} "
            f"({', '.join(f'{t:.2f}' for t in times)}); {agents.tasks:,} tasks, "
            f"{agents.requests:,} requests, shares {agents.time_shares}"
        )


if __name__ == "__main__":
    main()
