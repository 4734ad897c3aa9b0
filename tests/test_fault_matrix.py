"""The fault matrix (issue 6): each server fault is survived and recorded as its own kind.

For every fault the simulator injects: the run finishes, the number of attempts in events.db
equals the number of requests the simulator counted, no session ever has two attempts in
flight, and failures stay out of the latency distributions.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import SimProcess, free_port, start_sim
from runs import assert_one_in_flight, run_bench, start_run

FAULTS = {
    "http500": "http_5xx",
    "http429": "rate_limited",
    "reset": "reset",
    "malformed": "malformed",
    "truncate": "truncated",
    "stall": "first_token_timeout",
    "stall_mid": "idle_timeout",
}


def _sim_total(sim: SimProcess) -> dict[str, float]:
    text = urllib.request.urlopen(sim.url + "/metrics", timeout=10).read().decode()
    pattern = r'^turnbench_sim_requests_total\{[^}]*outcome="(\w+)"[^}]*\} ([\d.e+]+)$'
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.M)}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_recorded_and_counted(tmp_path: Path, fault: str) -> None:
    sim = start_sim(
        "--fault",
        f"{fault}=0.3",
        "--seed",
        "11",
        "--set",
        "stall_s=3",
        "--ttft-base-ms",
        "2",
        "--decode-ms-base",
        "2",
    )
    try:
        result = run_bench(
            tmp_path,
            {
                "target": {"url": sim.v1, "timeouts": {"first_token_s": 0.8, "idle_s": 0.8}},
                "workload": {
                    "type": "synthetic",
                    "conversations": 8,
                    "turns": 4,
                    "input_tokens": 10,
                    "output_tokens": 12,
                },
                "session": {"ignore_eos": True, "on_failure": "continue"},
                "load": {"mode": "users", "users": 4},
            },
        )
        time.sleep(0.2)  # the simulator books a request the client gave up on when it sees it go
        counted = _sim_total(sim)
    finally:
        sim.stop()
    rows = result.attempts
    assert len(rows) == 32
    assert sum(counted.values()) == len(rows), counted
    failed = [r for r in rows if r["status"] == "error"]
    assert failed, "the fault never fired"
    assert {r["error_kind"] for r in failed} == {FAULTS[fault]}
    assert counted[fault] == len(failed)
    assert_one_in_flight(result)
    summary = result.summary
    assert summary["requests"]["failed"] == len(failed)
    assert summary["errors"] == {FAULTS[fault]: len(failed)}
    assert summary["requests"]["e2e_ms"]["count"] == len(rows) - len(failed)
    assert summary["requests"]["ttft_ms"]["count"] == len(rows) - len(failed)


@pytest.mark.parametrize(
    ("fault", "kind", "limit_s"),
    [("stall", "first_token_timeout", 1.0), ("stall_mid", "idle_timeout", 0.4)],
)
def test_timeouts_fire_on_their_own_deadline(
    tmp_path: Path, fault: str, kind: str, limit_s: float
) -> None:
    """With `idle_s` shorter than `first_token_s`, a stall before the first token is still a
    first-token timeout, and a stall after it an idle timeout; neither fires early, or more
    than a moment late."""
    sim = start_sim("--fault", f"{fault}=0.5", "--seed", "5", "--set", "stall_s=3")
    try:
        result = run_bench(
            tmp_path,
            {
                "target": {"url": sim.v1, "timeouts": {"first_token_s": 1.0, "idle_s": 0.4}},
                "workload": {"type": "synthetic", "conversations": 4, "turns": 2},
                "session": {"on_failure": "continue"},
                "load": {"mode": "users", "users": 4},
            },
        )
    finally:
        sim.stop()
    failed = [r for r in result.attempts if r["status"] == "error"]
    assert failed, "the fault never fired"
    assert {r["error_kind"] for r in failed} == {kind}
    for r in failed:
        # a first-token limit runs from the send; an idle one from the last content chunk
        start = r["t_sent_ns"] if kind == "first_token_timeout" else r["t_last_token_ns"]
        waited_s = (r["t_end_ns"] - start) / 1e9
        assert limit_s <= waited_s < limit_s + 0.5, (kind, waited_s)


def test_server_killed_mid_run_then_back(tmp_path: Path) -> None:
    port = free_port()
    args = ("--port", str(port), "--ttft-base-ms", "5", "--decode-ms-base", "5")

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "turnbench", "sim", "--host", "127.0.0.1", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().startswith("turnbench sim ready")
        return proc

    first = start()
    holder: dict[str, subprocess.Popen[str]] = {}

    def chaos() -> None:
        time.sleep(1.5)
        first.kill()
        first.wait()
        time.sleep(1.5)
        holder["second"] = start()

    thread = threading.Thread(target=chaos)
    thread.start()
    try:
        result = run_bench(
            tmp_path,
            {
                "target": {"url": f"http://127.0.0.1:{port}/v1"},
                "workload": {
                    "type": "synthetic",
                    "conversations": 6,
                    "cycle": True,
                    "turns": 4,
                    "input_tokens": 10,
                    "output_tokens": 10,
                },
                "session": {"ignore_eos": True, "think_time": 0.1},
                "load": {"mode": "users", "users": 3, "duration_s": 6, "end": "cut"},
            },
        )
    finally:
        thread.join()
        for proc in (first, holder.get("second")):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
    rows = result.attempts
    kinds = {r["error_kind"] for r in rows if r["status"] == "error"}
    assert "connect_error" in kinds, kinds
    assert kinds <= {"connect_error", "reset"}
    kill_at = min(r["t_end_ns"] for r in rows if r["status"] == "error")
    back = [r for r in rows if r["status"] == "ok" and r["t_sent_ns"] > kill_at + 1e9]
    assert back, "the run did not recover when the server came back"
    assert_one_in_flight(result)


def test_kill_9_leaves_a_readable_events_db(tmp_path: Path) -> None:
    cfg = tmp_path / "long.yaml"
    cfg.write_text(
        "target: {sim_args: ['--decode-ms-base', '1', '--ttft-base-ms', '1']}\n"
        "workload: {type: synthetic, conversations: 10, cycle: true, turns: 3,"
        " input_tokens: 10, output_tokens: 5}\n"
        "load: {mode: users, users: 4, duration_s: 60}\n"
    )
    out = tmp_path / "runs"
    proc = start_run(cfg, out, quiet=True)
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)  # turnbench and its simulator, no goodbye
    proc.wait()
    (run,) = list(out.iterdir())
    conn = sqlite3.connect(run / "events.db")
    (n,) = conn.execute("SELECT COUNT(*) FROM requests").fetchone()
    conn.close()
    assert n > 0
    report = subprocess.run(
        [sys.executable, "-m", "turnbench", "report", str(run)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    assert (run / "summary.json").exists() and "Per turn" in report.stdout


def test_very_slow_server_hits_the_total_timeout(tmp_path: Path) -> None:
    sim = start_sim("--decode-ms-base", "100", "--ttft-base-ms", "1")
    try:
        result = run_bench(
            tmp_path,
            {
                "target": {"url": sim.v1, "timeouts": {"total_s": 0.5, "idle_s": 5}},
                "workload": {
                    "type": "synthetic",
                    "conversations": 2,
                    "turns": 2,
                    "input_tokens": 10,
                    "output_tokens": 30,
                },
                "session": {"ignore_eos": True},
                "load": {"mode": "parallel"},
            },
        )
        counted = _sim_total(sim)
    finally:
        sim.stop()
    rows = result.attempts
    assert {r["error_kind"] for r in rows} == {"timeout"}
    assert all(0.49e9 < r["t_end_ns"] - r["t_sent_ns"] < 1.5e9 for r in rows)
    assert sum(counted.values()) == len(rows) == 4


def test_a_dead_events_writer_stops_the_run_with_one_error(tmp_path: Path) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text(
        "target: {sim_args: ['--decode-ms-base', '1', '--ttft-base-ms', '1']}\n"
        "workload: {type: synthetic, conversations: 10, cycle: true, turns: 3,"
        " input_tokens: 10, output_tokens: 5}\n"
        "load: {mode: users, users: 4, duration_s: 60}\n"
    )
    proc = start_run(cfg, tmp_path / "runs")
    time.sleep(2)
    writers = subprocess.run(
        ["pgrep", "-P", str(proc.pid), "-f", "multiprocessing.spawn"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(writers) == 1
    os.kill(int(writers[0]), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "the events.db writer stopped" in lines[0], stderr


def test_the_builtin_simulator_leaves_with_its_parent(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        "load: {mode: users, users: 1, duration_s: 60}\n"
        "workload: {type: synthetic, cycle: true, turns: 2}\n"
    )
    proc = start_run(cfg, tmp_path / "runs", quiet=True)
    time.sleep(1)
    sims = subprocess.run(
        ["pgrep", "-P", str(proc.pid), "-f", "turnbench sim"], capture_output=True, text=True
    ).stdout.split()
    assert len(sims) == 1
    os.killpg(proc.pid, signal.SIGKILL)  # the simulator runs in a session of its own
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{sims[0]}"):
        time.sleep(0.2)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(int(sims[0]), os.WNOHANG)
    status = Path(f"/proc/{sims[0]}/status")
    assert not status.exists() or "zombie" in status.read_text()
