"""The run folder as a newcomer finds it: one database file beside the config and the reports,
the run's phases explained, and the notices a user must be told, all read from events.db."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rich.console import Console

from runs import run_bench, start_run
from turnbench.client.attempt import Attempt
from turnbench.metrics.summary import summarize
from turnbench.record.journal import is_wal
from turnbench.record.recorder import EventRecorder
from turnbench.record.schema import SessionRecord
from turnbench.report.console import print_report
from turnbench.report.files import write_report

RUN_FOLDER = {"config.yaml", "events.db", "summary.json", "report.html"}
S = 1_000_000_000


def _tb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnbench", *args], capture_output=True, text=True, timeout=120
    )


def _folder(run: Path) -> set[str]:
    return {p.name for p in run.iterdir()}


def _only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def test_a_run_and_its_report_leave_one_database_file(tmp_path: Path) -> None:
    cfg = tmp_path / "short.yaml"
    cfg.write_text(
        "target: {sim_args: ['--zero-delay']}\n"
        "workload: {type: synthetic, conversations: 3, turns: 2, input_tokens: 8,"
        " output_tokens: 4}\n"
        "load: {mode: parallel}\n"
    )
    out = tmp_path / "runs"
    proc = _tb("run", str(cfg), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    run = _only_run(out)
    assert _folder(run) == RUN_FOLDER
    assert not is_wal(run / "events.db")
    again = _tb("report", str(run))
    assert again.returncode == 0, again.stderr
    assert _folder(run) == RUN_FOLDER


def test_sigterm_mid_run_leaves_one_database_file(tmp_path: Path) -> None:
    cfg = tmp_path / "long.yaml"
    cfg.write_text(
        "target: {sim_args: ['--decode-ms-base', '20']}\n"
        "workload: {type: synthetic, conversations: 20, cycle: true, turns: 6,"
        " input_tokens: 10, output_tokens: 200}\n"
        "session: {ignore_eos: true}\n"
        "load: {mode: users, users: 3, duration_s: 120, end: cut}\n"
    )
    out = tmp_path / "runs"
    proc = start_run(cfg, out)
    time.sleep(2)
    assert is_wal(next(out.glob("*/events.db")))  # readers may look while it runs
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    run = _only_run(out)
    assert _folder(run) == RUN_FOLDER
    conn = sqlite3.connect(run / "events.db")
    (reason,) = conn.execute("SELECT end_reason FROM runs").fetchone()
    conn.close()
    assert reason == "interrupted"


def test_an_old_run_still_in_wal_mode_is_reported_and_left_as_one_file(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay"]},
            "workload": {
                "type": "synthetic",
                "conversations": 2,
                "turns": 2,
                "input_tokens": 5,
                "output_tokens": 5,
            },
            "load": {"mode": "sequential"},
        },
    )
    db = result.path / "events.db"
    before = result.summary
    # what an older turnbench left: a WAL database, and the files a read-only reader made
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    conn.execute("SELECT COUNT(*) FROM requests").fetchone()
    conn.close()
    assert {"events.db-wal", "events.db-shm"} <= _folder(result.path)
    assert is_wal(db)
    again = write_report(result.path, Console(file=io.StringIO()))
    assert msgspec.to_builtins(again.requests) == before["requests"]
    assert _folder(result.path) == RUN_FOLDER
    assert not is_wal(db)


def test_the_timeline_of_a_run_with_warmup_and_drain_agrees_with_its_rows(
    tmp_path: Path,
) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--decode-ms-base", "10"]},
            "workload": {
                "type": "synthetic",
                "conversations": 20,
                "cycle": True,
                "turns": 3,
                "input_tokens": 8,
                "output_tokens": 40,
            },
            "session": {"ignore_eos": True, "think_time": 0.2},
            "load": {
                "mode": "users",
                "users": 3,
                "duration_s": 2,
                "warmup_s": 0.5,
                "end": "drain",
            },
        },
    )
    (first_sent, last_ok_end) = result.rows(
        "SELECT MIN(t_sent_ns), MAX(CASE WHEN status = 'ok' THEN t_end_ns END) FROM requests "
        "WHERE stage = 'main' AND t_sent_ns > 0"
    )[0]
    (last_end,) = result.rows("SELECT MAX(t_end_ns) FROM requests")[0]
    summary = result.summary
    timeline = summary["timeline"]
    assert summary["run"]["end_reason"] == "duration"
    assert timeline["warmup_s"] == 0.5
    assert (timeline["arrivals_s"], timeline["arrivals_end"]) == (2.0, "duration")
    assert last_end > 2 * S  # the sessions in flight at 2 s played on: a drain to show
    assert timeline["drain_s"] == pytest.approx(last_end / S - 2.0)
    assert summary["requests"]["window_s"] == pytest.approx((last_ok_end - first_sent) / S)
    assert timeline["window_start_s"] == pytest.approx(first_sent / S)
    assert timeline["window_end_s"] == pytest.approx(last_ok_end / S)
    for label, value in [
        ("warm-up s", "0.50"),
        ("arrivals s (to the duration limit)", "2.00"),
        ("drain s", f"{timeline['drain_s']:.2f}"),
        ("measured window s", f"{summary['requests']['window_s']:.2f}"),
    ]:
        (line,) = [x for x in result.output.splitlines() if label in x]
        assert line.rstrip(" │").endswith(value), line


def _attempt(session: str, turn: int, stage: str, times_s: tuple[float, float, float]) -> Attempt:
    intended, sent, end = (int(t * S) for t in times_s)
    return Attempt(
        stage=stage,
        worker=0,
        session_id=session,
        conversation_id=session,
        turn_index=turn,
        attempt=1,
        t_intended_ns=intended,
        t_sent_ns=sent,
        t_first_token_ns=sent + 1000,
        t_end_ns=end,
        completion_tokens=4,
    )


def _session(session: str, stage: str, start_s: float, end_s: float) -> SessionRecord:
    return SessionRecord(
        session_id=session,
        conversation_id=session,
        worker=0,
        stage=stage,
        t_intended_ns=int(start_s * S),
        t_start_ns=int(start_s * S),
        t_end_ns=int(end_s * S),
        gate_wait_ns=0,
        turns_planned=2,
        turns_ok=2,
        turns_failed=0,
        attempts=2,
        dropped_messages=0,
        outcome="completed",
    )


def _recorded_run(db: Path, load: dict[str, Any], end_reason: str) -> EventRecorder:
    """A run written through the recorder, with times chosen by hand (seconds):

    s0 (warm-up) starts at 0: turn 1 sent at 0.01, ends 1.2 (warm-up); turn 2 intended
    1.25, sent 1.3, ends 1.9 (main: intended after warmup_s 1.0).
    s1 starts at 1.5: turn 1 sent 1.51, ends 2.5.
    s2 starts at 3.0 (the last start): turn 1 sent 3.02, ends 4.0; turn 2 fails at 5.0.
    """
    recorder = EventRecorder(db, run_id="hand")
    recorder.start_run(name="hand", config_json={"load": load})
    recorder.record(_session("s0", "warmup", 0.0, 1.9))
    recorder.record(_session("s1", "main", 1.5, 2.5))
    recorder.record(_session("s2", "main", 3.0, 5.0))
    recorder.record(_attempt("s0", 1, "warmup", (0.0, 0.01, 1.2)))
    recorder.record(_attempt("s0", 2, "main", (1.25, 1.3, 1.9)))
    recorder.record(_attempt("s1", 1, "main", (1.5, 1.51, 2.5)))
    recorder.record(_attempt("s2", 1, "main", (3.0, 3.02, 4.0)))
    failed = _attempt("s2", 2, "main", (4.2, 4.2, 5.0))
    failed.status, failed.error_kind = "error", "http_5xx"
    recorder.record(failed)
    recorder.close()
    recorder.end_run(end_reason)
    return recorder


@pytest.mark.parametrize(
    ("end_reason", "duration_s", "arrivals", "drain"),
    [
        ("completed", None, (3.0, "last_session_start"), 2.0),
        ("interrupted", 60.0, (3.0, "last_session_start"), 2.0),
        ("duration", 3.5, (3.5, "duration"), 1.5),
    ],
)
def test_the_timeline_from_hand_chosen_times(
    tmp_path: Path,
    end_reason: str,
    duration_s: float | None,
    arrivals: tuple[float, str],
    drain: float,
) -> None:
    db = tmp_path / "events.db"
    _recorded_run(db, {"warmup_s": 1.0, "duration_s": duration_s}, end_reason)
    assert not is_wal(db)  # the writer left WAL mode as it finished, before any reader came
    summary = summarize(db)
    timeline = summary.timeline
    assert timeline.warmup_s == 1.0
    assert (timeline.arrivals_s, timeline.arrivals_end) == arrivals
    assert timeline.drain_s == pytest.approx(drain)
    assert timeline.last_end_s == pytest.approx(5.0)
    assert (timeline.window_start_s, timeline.window_end_s) == pytest.approx((1.3, 4.0))
    assert summary.requests.window_s == pytest.approx(2.7)
    assert {p.name for p in tmp_path.iterdir()} == {"events.db"}


DATASET_RAN_OUT = (
    "the dataset ran out at 12.3 s after 40 conversations before the requested 60 s "
    "duration; set workload.cycle: true to repeat it"
)


def test_a_notice_reaches_summary_json_and_ends_the_console_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    db = run / "events.db"
    recorder = EventRecorder(db, run_id="noticed")
    recorder.start_run(name="noticed", config_json={"load": {"duration_s": 60.0}})
    recorder.record(_attempt("s0", 1, "main", (0.0, 0.01, 0.5)))
    data = {"at_s": 12.3, "conversations": 40, "duration_s": 60.0}
    recorder.notice("dataset_exhausted", DATASET_RAN_OUT, int(12.3 * S), data)
    with pytest.raises(ValueError, match="t_s"):
        recorder.notice("bad", "data must not hide the notice's own keys", 0, {"t_s": 1})
    recorder.close()
    recorder.notice("drain_cut", "the drain ended with [b]2[/b] sessions cut", 70 * S, {})
    recorder.end_run("completed")

    buf = io.StringIO()
    console = Console(file=buf, width=100, force_terminal=True, color_system="standard")
    summary = write_report(run, console)
    notices = msgspec.to_builtins(summary.notices)
    assert notices == [
        {"kind": "dataset_exhausted", "message": DATASET_RAN_OUT, "t_s": 12.3, **data},
        {"kind": "drain_cut", "message": "the drain ended with [b]2[/b] sessions cut", "t_s": 70.0},
    ]
    assert json.loads((run / "summary.json").read_text())["notices"] == notices
    assert _folder(run) == {"events.db", "summary.json", "report.html"}
    assert f"notice: {DATASET_RAN_OUT}" in (run / "report.html").read_text()

    buf = io.StringIO()
    print_report(
        summary, Console(file=buf, width=100, force_terminal=True, color_system="standard")
    )
    lines = buf.getvalue().rstrip("\n").splitlines()
    assert lines[-2:] == [
        f"\x1b[33mnotice: {DATASET_RAN_OUT}\x1b[0m",  # one yellow line each, never wrapped
        "\x1b[33mnotice: the drain ended with [b]2[/b] sessions cut\x1b[0m",  # markup escaped
    ]
    assert any("Per conversation" in line for line in lines[:-2])


def test_an_events_db_without_a_notices_table_has_no_notices(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    _recorded_run(db, {"warmup_s": 1.0}, "completed")
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE notices")
    conn.close()
    assert summarize(db).notices == []
