"""Outages as facts of the run: the workers' breaker events merged into windows, what each
cost, how long throughput took to come back, and how the report shows them, all from
hand-built events.db files with hand-computed answers."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from handmade import session_record, write_events_db
from turnbench.client.attempt import Attempt
from turnbench.metrics.model import Summary
from turnbench.metrics.outages import Window, merge, worker_windows
from turnbench.metrics.series import series
from turnbench.metrics.summary import summarize
from turnbench.record.schema import SessionRecord
from turnbench.report.console import print_report
from turnbench.report.html import render

MS = 1_000_000
S = 1_000_000_000


def _ok(session: str, sent_ms: int, took_ms: int = 50, turn: int = 1) -> Attempt:
    sent = sent_ms * MS
    return Attempt(
        stage="main",
        worker=0,
        session_id=session,
        conversation_id=session,
        turn_index=turn,
        attempt=1,
        t_intended_ns=sent,
        t_sent_ns=sent,
        t_first_token_ns=sent + took_ms * MS // 2,
        t_end_ns=sent + took_ms * MS,
        completion_tokens=4,
    )


def _failed(session: str, sent_ms: int, kind: str, turn: int = 1, lag_ms: int = 0) -> Attempt:
    sent = sent_ms * MS
    return Attempt(
        stage="main",
        worker=0,
        session_id=session,
        conversation_id=session,
        turn_index=turn,
        attempt=1,
        t_intended_ns=sent - lag_ms * MS,
        t_sent_ns=sent,
        t_end_ns=sent + MS,
        status="error",
        error_kind=kind,
        http_status=503 if kind == "http_5xx" else None,
    )


def _steady(from_ms: int, to_ms: int, prefix: str) -> list[Attempt]:
    """10 successful requests a second, each in its own session, ending in the second it was
    sent (sent at .0, .1, ... .9 s, 50 ms each)."""
    return [_ok(f"{prefix}{t}", t) for t in range(from_ms, to_ms, 100)]


def _unfinished(session: str, end_s: float) -> SessionRecord:
    return session_record(session, 0, int(end_s * S), outcome="unfinished", turns_planned=3)


def _db(
    path: Path,
    attempts: list[Attempt],
    outages: list[tuple[int, str, float, int, int]] | None,
    sessions: Sequence[SessionRecord] = (),
    end_reason: str = "completed",
) -> Path:
    """An events.db with these rows; `outages` (worker, kind, t_s, failed, waiting) None: an
    events.db from before the table."""
    events = None
    if outages is not None:
        events = [(w, kind, int(t * S), failed, waiting) for w, kind, t, failed, waiting in outages]
    return write_events_db(path, attempts, sessions, end_reason=end_reason, outages=events)


def _two_workers_overlapping(tmp_path: Path) -> Path:
    """10 requests/s for 20 s; worker 0 down 20-24 s, worker 1 down 23.5-25 s; six failed
    attempts in between (three turns of three sessions); then 3 requests in second 26 and
    10 a second again from second 27."""
    attempts = [
        *_steady(0, 20_000, "a"),
        _failed("s1", 20_000, "connect_error", turn=2),
        _failed("s1", 20_500, "connect_error", turn=2),
        _failed("s1", 21_000, "connect_error", turn=2),
        _failed("s3", 22_000, "http_5xx", turn=4),
        _failed("s2", 23_500, "reset"),
        _failed("s2", 24_500, "reset"),
        _ok("s1", 25_200, 100, turn=2),  # the first success: sent 25.2 s, ends 25.3 s
        _ok("b1", 26_000),
        _ok("b2", 26_300),
        _ok("b3", 26_600),
        *_steady(27_000, 30_000, "c"),
    ]
    events = [
        (0, "down", 20.0, 0, 0),
        (1, "down", 23.5, 0, 0),
        (0, "back", 24.0, 3, 3),
        (1, "back", 25.0, 2, 4),
    ]
    return _db(tmp_path / "events.db", attempts, events)


def test_two_workers_overlapping_windows_are_one_outage(tmp_path: Path) -> None:
    summary = msgspec.to_builtins(summarize(_two_workers_overlapping(tmp_path)))
    (outage,) = summary["outages"]
    assert outage == {
        "start_s": 20.0,
        "end_s": 25.0,
        "duration_s": 5.0,
        "back": True,
        "gave_up": False,
        "workers": 2,
        "failed_attempts": 6,
        "failed_by_kind": {"connect_error": 3, "http_5xx": 1, "reset": 2},
        "turns_affected": 3,
        "sessions_affected": 3,
        "sessions_waiting": 7,
        "first_success_s": pytest.approx(25.3),
        "baseline_per_s": 10.0,
        # baseline: 10/s in seconds 10-19; second 26 has 3 (< 8), second 27 has 10
        "recovery_s": pytest.approx(27 - 25.3),
    }
    assert summary["downtime_s"] == 5.0
    assert summary["requests"]["failed"] == 6  # still counted, apart


def test_touching_windows_merge_and_separate_ones_do_not() -> None:
    events = [
        (0, "down", 1 * S, 0),
        (0, "back", 2 * S, 1),
        (1, "down", 2 * S, 0),
        (1, "back", 3 * S, 2),
        (1, "down", 5 * S, 0),
        (1, "back", 6 * S, 0),
    ]
    assert merge(worker_windows(events, 10 * S)) == [
        Window(1 * S, 3 * S, 3 * S, True, False, frozenset({0, 1}), 3),
        Window(5 * S, 6 * S, 6 * S, True, False, frozenset({1}), 0),
    ]


def test_a_down_without_back_is_open_and_counted_to_the_run_end(tmp_path: Path) -> None:
    attempts = [
        *_steady(0, 5_000, "a"),
        _failed("s1", 5_000, "connect_error"),
        _failed("s1", 5_500, "connect_error"),
        _failed("s2", 8_000, "connect_error"),  # sent after the last event, before the end
    ]
    db = _db(
        tmp_path / "events.db",
        attempts,
        [(0, "down", 5.0, 0, 0)],
        sessions=[_unfinished("s1", 9.0)],  # the run's last row: sessions end with the run
    )
    summary = msgspec.to_builtins(summarize(db))
    (outage,) = summary["outages"]
    assert (outage["end_s"], outage["duration_s"], outage["back"]) == (None, 4.0, False)
    assert (outage["failed_attempts"], outage["sessions_affected"]) == (3, 2)
    assert (outage["first_success_s"], outage["recovery_s"]) == (None, None)
    assert summary["downtime_s"] == 4.0


def test_attempts_failed_during_an_outage_do_not_start_the_window_or_the_verdict(
    tmp_path: Path,
) -> None:
    attempts = [
        # the target is down from the start; these went out half a second late
        *(_failed(f"s{i}", 100 * i, "connect_error", lag_ms=500) for i in range(1, 11)),
        *_steady(2_000, 4_000, "a"),
    ]
    events = [(0, "down", 0.1, 0, 0), (0, "back", 1.5, 10, 2)]
    summary = msgspec.to_builtins(summarize(_db(tmp_path / "events.db", attempts, events)))
    assert summary["timeline"]["window_start_s"] == 2.0
    assert summary["requests"]["window_s"] == pytest.approx(1.95)
    assert not summary["verdict"]["client_bound"]
    (outage,) = summary["outages"]
    # no whole second before the outage: no baseline, no recovery
    assert (outage["baseline_per_s"], outage["recovery_s"]) == (None, None)
    assert outage["first_success_s"] == pytest.approx(2.05)


def _gave_up(tmp_path: Path) -> Path:
    attempts = [
        *_steady(0, 3_000, "a"),
        _failed("s1", 3_000, "connect_error", turn=2),
        _failed("s1", 3_200, "connect_error", turn=2),
        _failed("s2", 3_400, "connect_error"),
    ]
    events = [(0, "down", 3.0, 0, 0), (0, "gave_up", 63.0, 3, 5)]
    db = _db(tmp_path / "events.db", attempts, events, end_reason="target_unreachable")
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO notices VALUES ('r', ?, 'dataset_exhausted', 'the last word', '{}')", (S,)
    )
    conn.commit()
    conn.close()
    return db


def test_a_worker_that_gave_up_closes_the_outage(tmp_path: Path) -> None:
    summary = msgspec.to_builtins(summarize(_gave_up(tmp_path)))
    (outage,) = summary["outages"]
    assert (outage["end_s"], outage["duration_s"]) == (63.0, 60.0)
    assert (outage["back"], outage["gave_up"], outage["sessions_waiting"]) == (False, True, 5)
    assert (outage["failed_attempts"], outage["turns_affected"]) == (3, 2)
    assert outage["recovery_s"] is None


def _console_text(summary: Summary) -> list[str]:
    buf = io.StringIO()
    print_report(summary, Console(file=buf, width=120, color_system=None))
    return buf.getvalue().rstrip("\n").splitlines()


def test_the_console_shows_the_outage_and_why_the_run_ended(tmp_path: Path) -> None:
    lines = _console_text(summarize(_gave_up(tmp_path)))
    text = "\n".join(lines)
    assert lines[0] == (
        "problem: the target never came back after 60.0 s (unreachable from 3.00 s); "
        "the last successful request ended at 2.95 s; the latencies cover only what ran before"
    )
    assert text.index("Run") < text.index("Outages (target unreachable 60.00 s in all)")
    assert text.index("Outages") < text.index("Per request")
    (row,) = [line for line in lines if "gave up" in line]
    assert [cell.strip() for cell in row.split("│")[1:-1]] == [
        "3.00",
        "63.00",
        "60.00",
        "3",
        "2 / 2",
        "-",
        "gave up",
    ]
    assert lines[-1] == "notice: the last word"  # the notices stay last


def test_the_console_says_still_down_and_hides_the_table_without_outages(
    tmp_path: Path,
) -> None:
    attempts = [*_steady(0, 2_000, "a"), _failed("s1", 2_000, "connect_error")]
    db = _db(tmp_path / "open.db", attempts, [(0, "down", 2.0, 0, 0)])
    assert any("still down at the end" in line for line in _console_text(summarize(db)))
    quiet = _console_text(summarize(_db(tmp_path / "quiet.db", attempts, [])))
    assert not any("Outages" in line or "problem" in line for line in quiet)


def test_an_events_db_without_the_outages_table_has_no_outages(tmp_path: Path) -> None:
    summary = summarize(_db(tmp_path / "events.db", _steady(0, 1_000, "a"), None))
    assert (summary.outages, summary.downtime_s) == ([], 0)


def test_report_html_has_the_outages_table_and_the_problem(tmp_path: Path) -> None:
    db = _two_workers_overlapping(tmp_path)
    page = render(summarize(db), series(db))
    assert "<h2>Outages (target unreachable 5.00 s in all)</h2>" in page
    assert "<td>20.00</td><td>25.00</td><td>5.00</td><td>6</td><td>3 / 3</td>" in page
    assert "problem:" not in page  # the target came back
    (tmp_path / "gave_up").mkdir()
    db = _gave_up(tmp_path / "gave_up")
    assert "<div class='problem'>problem: the target never came back after 60.0 s" in render(
        summarize(db), series(db)
    )
