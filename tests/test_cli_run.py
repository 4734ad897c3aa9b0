"""`turnbench run` and `turnbench report` as a user runs them: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runs import start_run

SECRET = "sk-turnbench-planted-SECRET-4242"


def _tb(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnbench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
    )


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def test_version_is_fast() -> None:
    t0 = time.perf_counter()
    proc = _tb("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("turnbench ")
    assert time.perf_counter() - t0 < 5  # a loose bound; bench/ measures the real figure


def test_run_writes_the_run_folder_without_secrets_and_report_rebuilds_it(tmp_path: Path) -> None:
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(
        "name: secrets\n"
        "target:\n  sim_args: ['--zero-delay']\n"
        "  headers: {X-Api-Key: " + SECRET + "}\n"
        "workload: {type: synthetic, conversations: 3, turns: 2, input_tokens: 8,"
        " output_tokens: 4}\n"
        "load: {mode: parallel}\n"
    )
    out = tmp_path / "runs"
    proc = _tb("run", str(cfg), "--out", str(out), env={"OPENAI_API_KEY": SECRET})
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    (run,) = _run_dirs(out)
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "events.db", "summary.json"}
    for path in run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    summary = json.loads((run / "summary.json").read_text())
    assert summary["requests"]["ok"] == 6
    (run / "summary.json").unlink()
    again = _tb("report", str(run))
    assert again.returncode == 0, again.stderr
    rebuilt = json.loads((run / "summary.json").read_text())
    assert rebuilt == summary
    assert "Per turn" in again.stdout and "Per conversation" in again.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("load: {mode: parallel, bogus: 1}\n", "bad.yaml:1 [load.bogus]: unknown key (got 1)"),
        ("load: {users: many}\n", "bad.yaml:1 [load.users]: Input should be a valid integer"),
        ("load:\n  mode: parallel\n  - broken\n", "bad.yaml:3: malformed YAML"),
        ("load: {mode: parallel, rate: 3}\n", "`rate` is for mode session-rate"),
        (
            "workload: {type: synthetic, turns: {dist: uniform, min: 5}}\n",
            "uniform needs min and max",
        ),
        ("workload: {type: dataset, path: missing.jsonl}\n", "missing.jsonl"),
        ("- a list\n", "the top level must be a mapping"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    out = tmp_path / "runs"
    proc = _tb("run", str(cfg), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not _run_dirs(out)


def test_non_utf8_config_and_bad_set(tmp_path: Path) -> None:
    cfg = tmp_path / "latin.yaml"
    cfg.write_bytes(b"name: caf\xe9\n")
    proc = _tb("run", str(cfg))
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr
    proc = _tb("run", "--set", "load.mode", "--out", str(tmp_path))
    assert proc.returncode == 2 and "--set expects dotted.key=value" in proc.stderr


def test_unreachable_server_is_one_error_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = _tb("run", "--target", "http://127.0.0.1:9/v1", "--out", str(out))
    assert proc.returncode == 2
    assert "cannot reach the server" in proc.stderr and "Traceback" not in proc.stderr
    assert not _run_dirs(out)


def test_ctrl_c_leaves_a_valid_events_db_and_a_report(tmp_path: Path) -> None:
    cfg = tmp_path / "long.yaml"
    cfg.write_text(
        "target: {sim_args: ['--decode-ms-base', '20']}\n"
        "workload: {type: synthetic, conversations: 20, cycle: true, turns: 6,"
        " input_tokens: 10, output_tokens: 200}\n"
        "session: {ignore_eos: true}\n"
        "load: {mode: users, users: 6, duration_s: 120, end: cut}\n"
    )
    out = tmp_path / "runs"
    proc = start_run(cfg, out)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr  # reported, and a script sees it was cut short
    (run,) = _run_dirs(out)
    conn = sqlite3.connect(run / "events.db")
    statuses = dict(conn.execute("SELECT status, COUNT(*) FROM requests GROUP BY status"))
    outcomes = dict(conn.execute("SELECT outcome, COUNT(*) FROM sessions GROUP BY outcome"))
    (reason,) = conn.execute("SELECT end_reason FROM runs").fetchone()
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert reason == "interrupted"
    assert statuses.get("cancelled") == 6, statuses  # one in flight per user, all cut
    assert outcomes.get("unfinished") == 6
    assert (run / "summary.json").exists() and "Per turn" in stdout


def test_completions_api_with_tool_turns_is_refused_up_front(tmp_path: Path) -> None:
    data = tmp_path / "tools.jsonl"
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
    ]
    data.write_text(json.dumps({"id": "t", "messages": msgs}) + "\n")
    out = tmp_path / "runs"
    proc = _tb("run", "--dataset", str(data), "--api", "completions", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "tool calls" in proc.stderr and "tools.jsonl" in proc.stderr
    assert not _run_dirs(out)


def test_a_second_ctrl_c_cuts_a_draining_run_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "drain.yaml"
    cfg.write_text(
        "target: {sim_args: ['--decode-ms-base', '50']}\n"
        "workload: {type: synthetic, conversations: 8, cycle: true, turns: 4,"
        " input_tokens: 10, output_tokens: 400}\n"
        "session: {ignore_eos: true}\n"
        "load: {mode: users, users: 3, duration_s: 120, end: drain, drain_timeout_s: 600}\n"
    )
    out = tmp_path / "runs"
    proc = start_run(cfg, out)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)  # drain: the replies in flight (20 s each) may finish
    time.sleep(1)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)  # second: cut now
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 130, stderr
    (run,) = _run_dirs(out)
    conn = sqlite3.connect(run / "events.db")
    statuses = dict(conn.execute("SELECT status, COUNT(*) FROM requests GROUP BY status"))
    conn.close()
    assert statuses == {"cancelled": 3}, statuses
    assert "Per turn" in stdout


@pytest.mark.parametrize("after_s", [None, 0.3, 0.6, 1.0, 1.5], ids=lambda a: f"{a}")
def test_ctrl_c_at_any_moment_of_the_start_exits_130_without_a_traceback(
    tmp_path: Path, after_s: float | None
) -> None:
    """While the CLI loads, the config is read, the simulator starts or the run begins: one
    quiet exit 130 (and a report if the run had begun), never a traceback.

    The first moment (None) is the CLI's loading: the Ctrl-C goes as the process reports
    (`python -X importtime`) its first import of typer. Why not a fixed time after the
    launch: on a busy machine (the suite runs three tests at a time) 50 ms often fell in the
    interpreter's own start, runpy's imports, before any line of turnbench runs."""
    flags = ["-X", "importtime"] if after_s is None else []
    proc = subprocess.Popen(
        [sys.executable, *flags, "-m", "turnbench", "run", "--duration", "3", "--out", "o"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    early = []
    if after_s is None:
        assert proc.stderr is not None
        for line in proc.stderr:
            early.append(line)
            if line.rsplit("|", 1)[-1].strip().startswith("typer"):
                break
    else:
        time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    stderr = "".join(ln for ln in [*early, *stderr.splitlines(True)] if "import time:" not in ln)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert len(stderr.strip().splitlines()) <= 1, stderr
