"""The server goes away mid-run, as a pod restart does: no hot loop, a recorded outage, recovery.

Every case kills a real simulator process on 127.0.0.1 under a real `turnbench run` and reads
what the run wrote to events.db and summary.json.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import SimProcess, free_port, sim_metric

READY = "turnbench sim ready"


def _start_sim(port: int) -> tuple[subprocess.Popen[str], int]:
    """A simulator on `port`; returns it and the wall time (ns) it became ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnbench", "sim", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().startswith(READY)
    return proc, time.time_ns()


def _run(port: int, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "turnbench", "run", "--target", f"http://127.0.0.1:{port}",
            "--mode", "users", "--users", "8", "--turns", "4", "--out", str(out),
            "--set", "workload.output_tokens=24", "--set", "session.ignore_eos=true", *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _rows(db: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _outage_run(
    tmp_path: Path,
    *,
    restart_after_s: float | None,
    extra: tuple[str, ...] = (),
    returncode: int = 0,
) -> dict[str, Any]:
    """Kill the server 2 s after it served the run's first requests; start it again
    `restart_after_s` later (or never).

    Why not a fixed time after the launch: on a busy machine (the suite runs several tests at
    a time) the run's start-up alone can take seconds, and a kill before the run's clock
    started is not the outage under test."""
    port = free_port()
    first, _ = _start_sim(port)
    out = tmp_path / "out"
    run = _run(port, out, *extra)
    times: dict[str, int] = {}
    servers = [first]

    def chaos() -> None:
        served = SimProcess(first, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while sim_metric(served, "turnbench_sim_requests_total") < 8:
            if time.monotonic() > deadline or run.poll() is not None:
                break
            time.sleep(0.1)
        time.sleep(2.0)
        first.kill()
        first.wait()
        times["killed"] = time.time_ns()
        if restart_after_s is not None:
            time.sleep(restart_after_s)
            second, ready = _start_sim(port)
            servers.append(second)
            times["back"] = ready

    thread = threading.Thread(target=chaos)
    thread.start()
    try:
        stdout, stderr = run.communicate(timeout=120)
    finally:
        thread.join()
        for server in servers:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=10)
    assert run.returncode == returncode, stderr
    assert "Traceback" not in stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    db = run_dir / "events.db"
    anchor = min(r["wall_anchor_ns"] for r in _rows(db, "SELECT * FROM workers"))
    return {
        "dir": run_dir,
        "db": db,
        "stdout": stdout,
        "summary": json.loads((run_dir / "summary.json").read_text()),
        "killed_s": (times["killed"] - anchor) / 1e9,
        "back_s": (times["back"] - anchor) / 1e9 if "back" in times else None,
        "requests": _rows(db, "SELECT * FROM requests"),
        "sessions": _rows(db, "SELECT * FROM sessions"),
        "outages": _rows(db, "SELECT * FROM outages ORDER BY t_ns"),
    }


def _unreachable(row: sqlite3.Row) -> bool:
    kind = row["error_kind"]
    return kind == "connect_error" or (kind == "reset" and row["http_status"] is None)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_restart_costs_a_visible_gap_and_nothing_else(tmp_path: Path, workers: str) -> None:
    run = _outage_run(
        tmp_path, restart_after_s=3.0, extra=("--duration", "12", "--workers", workers)
    )
    killed, back = run["killed_s"], run["back_s"]
    requests = run["requests"]
    # no hot loop: a few unreachable attempts per session, not hundreds
    per_session = Counter(r["session_id"] for r in requests if _unreachable(r))
    assert per_session and max(per_session.values()) <= 6, per_session
    # every worker's breaker opened near the kill and closed near the restart
    events = run["outages"]
    downs = [e for e in events if e["kind"] == "down"]
    backs = [e for e in events if e["kind"] == "back"]
    assert len(downs) == len(backs) == int(workers), [dict(e) for e in events]
    for e in downs:
        assert abs(e["t_ns"] / 1e9 - killed) < 1.0, (e["t_ns"] / 1e9, killed)
    for e in backs:
        assert abs(e["t_ns"] / 1e9 - back) < 1.0, (e["t_ns"] / 1e9, back)
    # the restarted server was used, and the waiting sessions finished their conversations
    after = [r for r in requests if r["status"] == "ok" and r["t_sent_ns"] / 1e9 > back]
    assert len(after) >= 8
    assert {s["outcome"] for s in run["sessions"]} <= {"completed", "unfinished"}
    assert sum(s["outcome"] == "completed" for s in run["sessions"]) > 8
    # the workload was not used up during the outage
    during = [s for s in run["sessions"] if killed < s["t_start_ns"] / 1e9 < back]
    assert len(during) <= 8, len(during)
    # one outage in the summary, whatever the number of workers
    (outage,) = run["summary"]["outages"]
    assert abs(outage["start_s"] - killed) < 1.0 and abs(outage["end_s"] - back) < 1.0
    assert outage["back"] and not outage["gave_up"]


def test_a_target_that_never_returns_ends_the_run_plainly(tmp_path: Path) -> None:
    run = _outage_run(
        tmp_path,
        restart_after_s=None,
        extra=("--duration", "60", "--set", "session.outage.max_wait_s=3"),
        returncode=1,  # the report is written, and a script sees the run did not complete
    )
    killed = run["killed_s"]
    last_end = max(r["t_end_ns"] for r in run["requests"]) / 1e9
    assert last_end < killed + 3.0 + 2.0, (last_end, killed)  # the wait, then the end
    assert run["summary"]["run"]["end_reason"] == "target_unreachable"
    assert "has not answered for 3 s" in run["stdout"]
    (outage,) = run["summary"]["outages"]
    assert outage["gave_up"] and outage["end_s"] is not None
    assert [e["kind"] for e in run["outages"]] == ["down", "gave_up"]
    unreachable = [r for r in run["requests"] if _unreachable(r)]
    assert len(unreachable) <= 8 * 4, len(unreachable)
