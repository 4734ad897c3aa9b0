"""The report: the verdict on who held the load back, escaping of server text, the answer at
the top, the swim lanes' sample and the load over time (a browser: test_report_browser.py)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from handmade import session_record, write_events_db
from runs import run_bench
from turnbench.client.attempt import Attempt
from turnbench.report.files import write_report
from turnbench.report.lanes import MAX_LANES, lane_rows
from turnbench.report.load_series import load_series


def test_a_cap_holding_requests_back_is_called_capacity_bound(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--decode-ms-base", "5", "--ttft-base-ms", "5"]},
            "workload": {
                "type": "synthetic",
                "conversations": 6,
                "turns": 2,
                "input_tokens": 10,
                "output_tokens": 10,
            },
            "session": {"ignore_eos": True},
            "load": {"mode": "parallel", "max_in_flight": 1},
        },
    )
    verdict = result.summary["verdict"]
    assert verdict["capacity_bound"] and not verdict["client_bound"]
    assert "capacity-bound" in result.output
    req = result.summary["requests"]
    # from the intended send, latency includes the wait for the cap
    assert req["e2e_from_intended_ms"]["p99"] > req["e2e_ms"]["p99"] + 50


def test_an_unhurried_run_gets_no_warning(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay"]},
            "workload": {
                "type": "synthetic",
                "conversations": 3,
                "turns": 2,
                "input_tokens": 5,
                "output_tokens": 5,
            },
            "load": {"mode": "sequential"},
        },
    )
    verdict = result.summary["verdict"]
    assert not verdict["capacity_bound"] and not verdict["client_bound"]
    assert "warning" not in result.output


def test_server_text_is_escaped_on_the_console(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay", "--model", "[bold red]evil[/]"]},
            "workload": {
                "type": "synthetic",
                "conversations": 1,
                "turns": 1,
                "input_tokens": 5,
                "output_tokens": 5,
            },
            "load": {"mode": "sequential"},
        },
    )
    assert "[bold red]evil[/]" in result.output


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    hostile = "<script>alert(1)</script>"
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--model", hostile, "--decode-ms-base", "2"]},
            "workload": {
                "type": "synthetic",
                "conversations": 4,
                "turns": 3,
                "input_tokens": 8,
                "output_tokens": 6,
            },
            "load": {"mode": "parallel"},
        },
    )
    page = (result.path / "report.html").read_text()
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    panels = set(re.findall(r"<div class='panel' id='panel-(\w+)'>", page))
    # the server's /metrics and the prefix cache (ideal against realised) among them
    assert {"throughput", "lanes", "per_turn", "server_queue", "cache_turn"} <= panels
    assert "/* BEGIN bokeh.min.js */" in page  # Bokeh inlined...
    assert not re.search(r"""<script[^>]*\ssrc=|<link[^>]*\shref=""", page)  # ...none fetched
    for heading in ("Per request", "Per turn", "Per conversation", "Over time", "Conversations"):
        assert heading in page
    assert "report.html: " in result.output and " MB" in result.output


def _attempt(sid: str, turn: int, sent_s: float, end_s: float, **kw: Any) -> Attempt:
    ns = int(1e9)
    return Attempt(
        stage="main",
        worker=0,
        session_id=sid,
        conversation_id=sid,
        turn_index=turn,
        attempt=kw.pop("attempt", 1),
        t_intended_ns=int(sent_s * ns),
        t_sent_ns=int(sent_s * ns),
        t_first_token_ns=int((sent_s + 0.01) * ns),
        t_end_ns=int(end_s * ns),
        **kw,
    )


def test_lanes_show_the_slowest_and_the_failed_sessions(tmp_path: Path) -> None:
    """60 one-turn sessions, s0 … s59, session k lasting 1 + k/100 s; s3 failed once, then
    succeeded: the lanes hold the 15 slowest, then s3, then some spread over the run."""
    attempts, sessions = [], []
    for k in range(60):
        sid = f"s{k}"
        start, end = float(k), k + 1 + k / 100
        if k == 3:
            attempts.append(
                _attempt(sid, 1, start, start + 0.1, status="error", error_kind="http_5xx")
            )
            attempts.append(_attempt(sid, 1, start + 0.2, end, attempt=2))
        else:
            attempts.append(_attempt(sid, 1, start, end))
        sessions.append(session_record(sid, int(start * 1e9), int(end * 1e9)))
    db = write_events_db(tmp_path / "events.db", attempts, sessions)
    rows = lane_rows(db)
    order = list(dict.fromkeys(r["session"].split(" @ ")[0] for r in rows))
    assert order[:15] == [f"s{k}" for k in range(59, 44, -1)]
    assert order[15] == "s3"
    assert len(order) <= MAX_LANES and len(set(order)) == len(order)
    s3 = [r for r in rows if r["session"] == "s3 @ 3 s"]
    assert [r["kind"] for r in s3] == ["error", "retried"]
    assert [r["sent"] for r in s3] == [0.0, pytest.approx(0.2)]  # on the session's own clock
    assert s3[0]["error"] == "http_5xx"


def test_concurrency_counts_what_is_open_at_each_instant(tmp_path: Path) -> None:
    """Requests on [0.5, 2) and [1, 3) s: in flight 1, 2, 1, 0 at 0.6, 1.5, 2.4, 3 s."""
    attempts = [_attempt("a", 1, 0.5, 2.0), _attempt("b", 1, 1.0, 3.0)]
    sessions = [session_record("a", int(5e8), int(2e9)), session_record("b", int(1e9), int(3e9))]
    db = write_events_db(tmp_path / "events.db", attempts, sessions)
    data = load_series(db)
    c = data["concurrency"]
    at = {round(float(t), 3): int(n) for t, n in zip(c["t"], c["in_flight"], strict=True)}
    assert (at[0.6], at[1.5], at[2.4], at[3.0]) == (1, 2, 1, 0)
    assert list(c["sessions"]) == list(c["in_flight"])
    assert data["errors"] == {}


def test_a_probe_report_gives_its_capacity_searchs_answer(tmp_path: Path) -> None:
    """A run folder inside a capacity search's (search.json one level up) shows the search's
    answer sentence at the top, its name escaped."""
    probe = tmp_path / "search" / "probe-01-users-8"
    probe.mkdir(parents=True)
    attempts = [_attempt("a", 1, 0.5, 1.5)]
    write_events_db(probe / "events.db", attempts, [session_record("a", int(5e8), int(15e8))])
    record = {"name": "<b>known</b>", "answer": {"sentence": "holds 8 users (bracket 8–9)"}}
    (probe.parent / "search.json").write_text(json.dumps(record))
    write_report(probe, Console(file=io.StringIO()))
    page = (probe / "report.html").read_text(encoding="utf-8")
    top = page.split("<nav>", 1)[0]
    assert "holds 8 users (bracket 8–9)" in top and "&lt;b&gt;known&lt;/b&gt;" in top
    assert "<b>known</b>" not in page
    assert "load sent as scheduled" in top  # the verdict card
