"""How big and how slow is report.html for a very long run? A hand-built events.db of N
requests (default 1,000,000), then `turnbench report` on it, timed, with the file's size.

Why hand-built: a real run of a million requests takes hours; the report reads only the file,
so rows shaped like a long closed-loop run (64 users, 10-turn conversations, 1 s think time,
1 % failures retried, server scrapes every 5 s) measure the same thing in minutes. Chunk gaps
are left empty (a real run's would add ~8 bytes per token to the summary's reading, not to
the report's plots).

    .venv/bin/python bench/report_size.py [N] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

from turnbench.record.schema import ATTEMPT_COLUMNS, DDL, SESSION_COLUMNS, SessionRecord

USERS, TURNS = 64, 10
NS = 1_000_000_000


def _requests(n: int, rng: np.random.Generator) -> tuple[list[tuple], list[SessionRecord]]:
    """N attempt rows and their sessions: each user plays conversations back to back."""
    attempts: list[tuple] = []
    sessions: list[SessionRecord] = []
    clock = np.zeros(USERS)
    sid = 0
    columns = {c: i for i, c in enumerate(ATTEMPT_COLUMNS)}
    blank = [None] * len(ATTEMPT_COLUMNS)
    while len(attempts) < n:
        for user in range(USERS):
            sid += 1
            start = clock[user]
            t = start
            for turn in range(1, TURNS + 1):
                prompt = 600 + 150 * turn
                for attempt in (1, 2):
                    failed = attempt == 1 and rng.random() < 0.01
                    ttft = 0.03 + prompt * 2e-5 + rng.exponential(0.02)
                    e2e = 0.05 if failed else ttft + rng.uniform(0.5, 2.0)
                    row = list(blank)
                    values = {
                        "stage": "main",
                        "worker": user % 2,
                        "session_id": f"s{sid}",
                        "conversation_id": f"c{sid % 500}",
                        "turn_index": turn,
                        "attempt": attempt,
                        "t_intended_ns": int(t * NS),
                        "t_sent_ns": int((t + 0.0005) * NS),
                        "t_first_token_ns": None if failed else int((t + ttft) * NS),
                        "t_last_token_ns": None if failed else int((t + e2e) * NS),
                        "t_end_ns": int((t + e2e) * NS),
                        "gate_wait_ns": 0,
                        "chunk_gaps": b"",
                        "content_chunks": 0 if failed else 100,
                        "prompt_tokens": None if failed else prompt,
                        "completion_tokens": None if failed else 100,
                        "cached_tokens": None if failed else prompt - 150,
                        "token_source": "usage",
                        "context_messages": 2 * turn,
                        "dropped_messages": 0,
                        "status": "error" if failed else "ok",
                        "http_status": 500 if failed else 200,
                        "error_kind": "http_5xx" if failed else None,
                        "error_message": "injected" if failed else None,
                        "finish_reason": None if failed else "length",
                        "reconnects": 0,
                        "replica": None,
                        "ideal_cached_tokens": None if failed else prompt - 150,
                    }
                    for key, value in values.items():
                        row[columns[key]] = value
                    attempts.append(tuple(row))
                    t += e2e + (0.05 if failed else 1.0)
                    if not failed:
                        break
            clock[user] = t
            sessions.append(
                SessionRecord(
                    session_id=f"s{sid}",
                    conversation_id=f"c{sid % 500}",
                    worker=user % 2,
                    stage="main",
                    t_intended_ns=int(start * NS),
                    t_start_ns=int(start * NS),
                    t_end_ns=int(t * NS),
                    gate_wait_ns=0,
                    turns_planned=TURNS,
                    turns_ok=TURNS,
                    turns_failed=0,
                    attempts=TURNS,
                    dropped_messages=0,
                    outcome="completed",
                    task_id=f"s{sid}",
                )
            )
    return attempts[:n], sessions


def build(db: Path, n: int) -> None:
    """The events.db: run row, requests, sessions, and /metrics scrapes every 5 s."""
    rng = np.random.default_rng(1)
    attempts, sessions = _requests(n, rng)
    conn = sqlite3.connect(db)
    conn.executescript(DDL)
    config = {"name": "big", "load": {"mode": "users", "users": USERS, "warmup_s": 0}}
    conn.execute(
        "INSERT INTO runs (run_id, name, end_reason, target, model, api, config_json) "
        "VALUES ('big', 'big', 'completed', 'http://127.0.0.1:1/v1', 'm', 'chat', ?)",
        (json.dumps(config),),
    )
    marks = ", ".join("?" * len(ATTEMPT_COLUMNS))
    conn.executemany(
        f"INSERT INTO requests (run_id, {', '.join(ATTEMPT_COLUMNS)}) VALUES ('big', {marks})",
        attempts,
    )
    marks = ", ".join("?" * len(SESSION_COLUMNS))
    conn.executemany(
        f"INSERT INTO sessions (run_id, {', '.join(SESSION_COLUMNS)}) VALUES ('big', {marks})",
        [msgspec.structs.astuple(s) for s in sessions],
    )
    end_s = max(a[ATTEMPT_COLUMNS.index("t_end_ns")] for a in attempts) / NS
    scrapes = []
    for i, t in enumerate(np.arange(0, end_s, 5.0)):
        t_ns = int(t * NS)
        scrapes += [
            (t_ns, "vllm:num_requests_running", "{}", float(USERS - rng.integers(0, 8))),
            (t_ns, "vllm:num_requests_waiting", "{}", float(rng.integers(0, 3))),
            (t_ns, "vllm:kv_cache_usage_perc", "{}", float(rng.uniform(0.3, 0.6))),
            (t_ns, "vllm:prefix_cache_queries_total", "{}", float(i * 50_000)),
            (t_ns, "vllm:prefix_cache_hits_total", "{}", float(i * 40_000)),
        ]
    conn.executemany("INSERT INTO server_metrics VALUES ('big', ?, ?, ?, ?)", scrapes)
    conn.execute(
        "CREATE INDEX IF NOT EXISTS requests_session ON requests (session_id, turn_index, attempt)"
    )
    conn.commit()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build the run folder here and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="report-size-"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build(folder / "events.db", args.n)
    built = time.perf_counter() - t0
    t1 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "turnbench", "report", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    took = time.perf_counter() - t1
    size = (folder / "report.html").stat().st_size
    db_mb = (folder / "events.db").stat().st_size / 1e6
    print(f"{args.n:,} requests: events.db {db_mb:.0f} MB built in {built:.0f} s")
    print(f"turnbench report: {took:.1f} s, report.html {size / 1e6:.2f} MB ({folder})")
    print(proc.stdout.strip().splitlines()[-2])


if __name__ == "__main__":
    main()
