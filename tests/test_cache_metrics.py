"""The prefix cache, ideal against realised: totals, per turn and per session, the eviction
cliff in run time and in context length, retention against idle time and the warm-start
check, all from hand-built events.db files whose answers the tests derive from the rows."""

from __future__ import annotations

import io
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from rich.console import Console

from handmade import session_record, write_events_db
from turnbench.client.attempt import Attempt
from turnbench.metrics.cache import IDLE_EDGES_S, describe_cache
from turnbench.metrics.cache_model import CacheTurn
from turnbench.metrics.model import to_json
from turnbench.metrics.series import series
from turnbench.metrics.summary import summarize
from turnbench.record.schema import SessionRecord
from turnbench.report.cache import cache_table, cache_turns_table, retention_table
from turnbench.report.console import print_report
from turnbench.report.html import render
from turnbench.report.tables import all_tables

MS = 1_000_000
S = 1_000_000_000


@dataclass
class Row:
    """One attempt as the tests write it: times in ms of the run clock."""

    session: str
    turn: int
    sent_ms: float
    prompt: int
    ideal: int | None
    cached: int | None
    ttft_ms: float = 20
    took_ms: float = 100
    stage: str = "main"
    status: str = "ok"
    attempt: int = 1

    def attempt_row(self) -> Attempt:
        sent = int(self.sent_ms * MS)
        return Attempt(
            stage=self.stage,
            worker=0,
            session_id=self.session,
            conversation_id=self.session,
            turn_index=self.turn,
            attempt=self.attempt,
            t_intended_ns=sent,
            t_sent_ns=sent,
            t_first_token_ns=sent + int(self.ttft_ms * MS) if self.status == "ok" else None,
            t_end_ns=sent + int(self.took_ms * MS),
            prompt_tokens=self.prompt,
            completion_tokens=8,
            cached_tokens=self.cached,
            status=self.status,
            ideal_cached_tokens=self.ideal,
        )


def _sessions_of(rows: list[Row]) -> list[SessionRecord]:
    """A session row per session of the attempts: from its first send to its last end."""
    spans: dict[str, list[float]] = {}
    for r in rows:
        lo, hi = spans.get(r.session, [r.sent_ms, r.sent_ms + r.took_ms])
        spans[r.session] = [min(lo, r.sent_ms), max(hi, r.sent_ms + r.took_ms)]
    return [_record(sid, lo / 1e3, hi / 1e3) for sid, (lo, hi) in spans.items()]


def _record(sid: str, start_s: float, end_s: float, stage: str = "main") -> SessionRecord:
    return session_record(sid, int(start_s * S), int(end_s * S), stage=stage)


def _db(
    path: Path,
    rows: list[Row],
    sessions: list[SessionRecord] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    attempts = [r.attempt_row() for r in rows]
    return write_events_db(
        path, attempts, _sessions_of(rows) if sessions is None else sessions, config=config
    )


def _cache(path: Path, block_size: int = 16) -> dict[str, Any] | None:
    """The builder's `cache` as summary.json holds it (plain JSON values)."""
    conn = sqlite3.connect(path)
    try:
        return msgspec.to_builtins(describe_cache(conn, block_size, salted=False))
    finally:
        conn.close()


def _kept(rows: list[Row]) -> float:
    """Σ realised / Σ ideal over the rows that count: ideal > 0, cached reported."""
    use = [r for r in rows if r.ideal and r.cached is not None]
    return sum(r.cached or 0 for r in use) / sum(r.ideal or 0 for r in use)


# ---------------------------------------------------------------------------------------------
# totals, per turn, per session


def _two_sessions() -> tuple[list[Row], list[Row]]:
    """Three turns of two sessions (the rows that count) and rows that must be left out."""
    counted = [
        Row("s1", 1, 1, 200, 0, 0),
        Row("s1", 2, 1000, 500, 400, 400),
        Row("s1", 3, 2000, 800, 704, 352),  # short by 352
        Row("s2", 1, 5, 200, 192, 0),  # short by 192
        Row("s2", 2, 1005, 500, 400, None),  # the server reported nothing
        Row("s2", 3, 2005, 800, 704, 700),  # short by 4: less than a block
    ]
    left_out = [
        Row("w1", 1, 3000, 900, 100, 0, stage="warmup"),
        Row("s3", 1, 3100, 900, 100, 0, status="error"),
        Row("s4", 1, 3200, 900, None, 0),  # no ideal
    ]
    return counted, left_out


def test_totals_per_turn_and_per_session(tmp_path: Path) -> None:
    counted, left_out = _two_sessions()
    cache = _cache(_db(tmp_path / "events.db", counted + left_out))
    assert cache is not None
    reported = [r for r in counted if r.cached is not None]
    prompt = sum(r.prompt for r in counted)
    ideal = sum(r.ideal or 0 for r in counted)
    realised = sum(r.cached or 0 for r in reported)
    assert cache["totals"] == {
        "requests": len(counted),
        "server_reported": True,
        "reported_requests": len(reported),
        "prompt_tokens": prompt,
        "ideal_tokens": ideal,
        "realised_tokens": realised,
        "ideal_ratio": pytest.approx(ideal / prompt),
        "realised_ratio": pytest.approx(realised / sum(r.prompt for r in reported)),
        "kept": pytest.approx(_kept(counted)),
        "fell_short": 2,
    }
    by_turn = {t["turn"]: t for t in cache["per_turn"]}
    assert sorted(by_turn) == [1, 2, 3]
    for turn, t in by_turn.items():
        rows = [r for r in counted if r.turn == turn]
        has = [r.cached for r in rows if r.cached is not None]
        assert t["requests"] == len(rows)
        assert t["mean_prompt_tokens"] == pytest.approx(np.mean([r.prompt for r in rows]))
        assert t["mean_ideal_tokens"] == pytest.approx(np.mean([r.ideal for r in rows]))
        assert t["mean_realised_tokens"] == pytest.approx(np.mean(has))
        assert t["kept"] == pytest.approx(_kept(rows))
    assert by_turn[1]["kept"] == 0.0  # s1's first turn has nothing to keep; s2's kept nothing
    per = [_kept([r for r in counted if r.session == s]) for s in ("s1", "s2")]
    assert cache["per_session"] == {
        "sessions": 2,
        "p10": pytest.approx(np.percentile(per, 10)),
        "p50": pytest.approx(np.mean(per)),
        "min": pytest.approx(min(per)),
    }


def test_fell_short_is_counted_in_the_run_s_blocks(tmp_path: Path) -> None:
    """The summary reads `cache.block_size` from the run's config: at 8 tokens the request
    short by 4 is within a block, at 4 it falls short, at 256 only s1's turn 3 (352) does."""
    counted, _ = _two_sessions()
    for block, short in ((8, 2), (4, 3), (256, 1)):
        db = _db(tmp_path / f"b{block}.db", counted, config={"cache": {"block_size": block}})
        cache = summarize(db).cache
        assert cache is not None and cache.totals is not None
        assert (cache.block_size, cache.totals.fell_short) == (block, short)


def test_no_ideal_and_no_warm_start_is_no_cache(tmp_path: Path) -> None:
    """A run whose rows hold no ideal (or an events.db from before the column) and whose
    cache was cold: no figures, no tables."""
    rows = [Row("s1", 1, 0, 200, None, 0), Row("s1", 2, 1000, 400, None, 384)]
    db = _db(tmp_path / "events.db", rows)
    assert _cache(db) is None
    summary = summarize(db)
    assert summary.cache is None
    assert not any(t.title.startswith("Prefix cache") for t in all_tables(summary))
    old = _db(tmp_path / "old.db", rows)
    conn = sqlite3.connect(old)
    conn.execute("ALTER TABLE requests DROP COLUMN ideal_cached_tokens")
    conn.commit()
    conn.close()
    assert _cache(old) is None


# ---------------------------------------------------------------------------------------------
# the eviction cliff


def _steady(realised: Any, prompt: Any = lambda i: 1000) -> list[Row]:
    """200 requests, one every 100 ms from 0.1 s to 20 s, round-robin over 10 sessions, each
    with an ideal of 160 tokens; `realised(i)` and `prompt(i)` of the i-th."""
    return [
        Row(f"s{i % 10}", i // 10 + 1, (i + 1) * 100, prompt(i), 160, realised(i))
        for i in range(200)
    ]


def test_the_cliff_is_the_first_time_bin_below_the_threshold(tmp_path: Path) -> None:
    """Everything kept until 12 s (bin 5 at exactly 90 %, which is not below), nothing after:
    1 s bins from the first send (the span is 19.9 s, /30 is less than 1 s): the cliff at
    12.1 s."""
    rows = _steady(lambda i: 0 if i >= 120 else 144 if 50 <= i < 60 else 160)
    sessions = [
        *_sessions_of(rows),  # 10 sessions, all live at 12 s
        _record("early", 0, 5),
        _record("late", 13, 20),
        _record("w", 0, 30, stage="warmup"),  # live, of any stage
    ]
    cache = _cache(_db(tmp_path / "events.db", rows, sessions))
    assert cache is not None
    over = cache["over_time"]
    assert over["bin_s"] == 1.0
    assert [b["start_s"] for b in over["bins"]] == pytest.approx([0.1 + k for k in range(20)])
    assert [b["requests"] for b in over["bins"]] == [10] * 20
    assert over["bins"][5]["kept"] == pytest.approx(0.9)
    assert cache["cliff"] == {
        "time_s": pytest.approx(12.1),
        "kept_before": pytest.approx(_kept(rows[:120])),
        "kept_after": 0.0,
        "live_sessions": 11,
    }
    assert cache["context_cliff_tokens"] == 512  # every prompt is 1000 tokens long


def test_no_cliff_when_everything_is_kept(tmp_path: Path) -> None:
    cache = _cache(_db(tmp_path / "events.db", _steady(lambda i: 160)))
    assert cache is not None
    assert (cache["cliff"], cache["context_cliff_tokens"]) == (None, None)
    assert cache["totals"]["kept"] == 1.0
    assert cache["totals"]["fell_short"] == 0


def test_the_context_cliff_is_the_smallest_length_below_the_threshold(tmp_path: Path) -> None:
    """Prompts of 1,000, 3,000, 5,000 and 9,000 tokens (power-of-two bins from 512, 2,048,
    4,096 and 8,192): the 5,000-token ones keep half, so the cliff starts at 4,096 even though
    the longest keep everything; a bin of 3 below the threshold (300 tokens) does not count."""
    lengths = (1000, 3000, 5000, 9000)
    rows = _steady(lambda i: 80 if i % 4 == 2 else 160, lambda i: lengths[i % 4])
    rows += [Row(f"x{i}", 1, 30_000 + i, 300, 160, 0) for i in range(3)]
    cache = _cache(_db(tmp_path / "events.db", rows))
    assert cache is not None
    assert cache["context_cliff_tokens"] == 4096
    bins = {b["from_tokens"]: b for b in cache["by_context"]}
    assert sorted(bins) == [256, 512, 2048, 4096, 8192]
    assert bins[256] == {"from_tokens": 256, "requests": 3, "kept": 0.0}
    assert bins[4096] == {"from_tokens": 4096, "requests": 50, "kept": 0.5}
    assert bins[8192]["kept"] == 1.0


# ---------------------------------------------------------------------------------------------
# retention against idle time


def _idle_sessions(groups: list[tuple[float, int, bool, float]]) -> list[Row]:
    """Per group (idle s, sessions, kept, TTFT ms): sessions whose turn 1 (nothing to keep)
    ends 100 ms after its send and whose turn 2 (320 ideal tokens) follows after that idle."""
    rows = []
    for g, (idle_s, n, kept, ttft) in enumerate(groups):
        for i in range(n):
            sid, start = f"g{g}-{i}", (g * 10 + i + 1) * 1000.0
            rows.append(Row(sid, 1, start, 100, 0, 0))
            sent = start + 100 + idle_s * 1000
            rows.append(Row(sid, 2, sent, 420, 320, 320 if kept else 0, ttft_ms=ttft))
    return rows


def test_retention_by_idle_time(tmp_path: Path) -> None:
    """Kept after 0.2 s and 3 s of idle, lost after 20 s: the server keeps a conversation's
    prefix through about 10 s. Two losses at 0.7 s are too few to count. A retry's idle is
    from the end of the failed attempt before it."""
    groups = [(0.2, 6, True, 10.0), (0.7, 2, False, 50.0), (3.0, 6, True, 12.0)]
    groups.append((20.0, 6, False, 80.0))
    rows = _idle_sessions(groups)
    rows += [
        Row("r", 1, 500_000, 100, 0, 0),
        Row("r", 2, 520_100, 420, 320, None, status="error", took_ms=100),
        Row("r", 2, 520_400, 420, 320, 320, attempt=2, ttft_ms=10.0),  # 0.2 s after the error
    ]
    db = _db(tmp_path / "events.db", rows)
    cache = _cache(db)
    assert cache is not None
    retention = cache["retention"]
    bins = {(b["from_s"], b["to_s"]): b for b in retention["bins"]}
    assert sorted(bins) == [(0.0, 0.5), (0.5, 1.0), (2.0, 5.0), (10.0, 30.0)]
    assert [b["requests"] for b in retention["bins"]] == [7, 2, 6, 6]
    assert [b["kept"] for b in retention["bins"]] == [1.0, 0.0, 1.0, 0.0]
    assert bins[(2.0, 5.0)]["realised_ratio"] == pytest.approx(320 / 420)
    assert bins[(0.0, 0.5)]["ttft_ms"]["p50"] == pytest.approx(10.0)
    assert bins[(10.0, 30.0)]["ttft_ms"]["mean"] == pytest.approx(80.0)
    assert (retention["kept_through_s"], retention["bound"]) == (10.0, "about")
    assert retention["longest_idle_s"] == pytest.approx(20.0)
    table = retention_table(summarize(db))
    assert table is not None
    assert table.rows[-1][:3] == ["10.0 - 30.0", "6", "0.0"]


@pytest.mark.parametrize(
    ("groups", "answer"),
    [
        ([(0.1, 5, False, 10.0), (3.0, 5, True, 10.0)], (IDLE_EDGES_S[0], "under")),
        (
            [(0.1, 5, True, 10.0), (150.0, 5, True, 10.0), (40.0, 2, True, 10.0)],
            (150.0, "at_least"),
        ),
        ([(0.1, 4, False, 10.0)], (None, None)),  # no bin has enough requests
    ],
)
def test_retention_answers(
    tmp_path: Path, groups: list[tuple[float, int, bool, float]], answer: tuple[Any, Any]
) -> None:
    cache = _cache(_db(tmp_path / "events.db", _idle_sessions(groups)))
    assert cache is not None
    retention = cache["retention"]
    assert (retention["kept_through_s"], retention["bound"]) == answer


def test_no_retention_without_reported_cached_tokens(tmp_path: Path) -> None:
    rows = [
        Row(r.session, r.turn, r.sent_ms, r.prompt, r.ideal, None)
        for r in _idle_sessions([(3.0, 6, True, 10.0)])
    ]
    cache = _cache(_db(tmp_path / "events.db", rows))
    assert cache is not None
    assert cache["totals"]["server_reported"] is False
    assert (cache["totals"]["kept"], cache["totals"]["realised_tokens"]) == (None, None)
    retention = cache["retention"]
    assert retention["bins"][0]["requests"] == 6
    assert (retention["kept_through_s"], retention["bound"]) == (None, None)


# ---------------------------------------------------------------------------------------------
# the warm-start check


def _early(cached: tuple[int | None, ...], ideal: int | None = 0) -> list[Row]:
    """A warm-up request at 10 ms (its first token at 60 ms, the run's first), then requests
    at 20, 30, 40 and 50 ms, and one at 60 ms (as the first token arrives: not checked)."""
    rows = [Row("w", 1, 10, 200, ideal, cached[0], ttft_ms=50, stage="warmup")]
    rows += [
        Row(f"s{i}", 1, 10 * i + 10, 200, ideal, c, ttft_ms=50) for i, c in enumerate(cached[1:], 1)
    ]
    return rows


def test_a_warm_start_is_flagged_and_noted(tmp_path: Path) -> None:
    rows = _early((160, 160, 160, 0, None, 160))
    summary = summarize(_db(tmp_path / "events.db", rows))
    assert summary.cache is not None
    warm = msgspec.to_builtins(summary.cache.warm_start)
    assert warm == {
        "checked": True,
        "first_token_s": pytest.approx(0.06),
        "requests": 4,  # the warm-up request and those at 20, 30 and 40 ms (50 ms reports none)
        "with_cached": 3,
        "cached_tokens": 480,
        "warm": True,
    }
    assert summary.verdict.notes[-1] == (
        "the server's prefix cache was warm at the start: 3 of the 4 requests sent before the "
        "first reply found 480 cached tokens no reply of this run could have left: an earlier "
        "run's prefixes (or requests of this run sent together that share one); cache.salt "
        "(on unless --no-cache-salt) keeps runs apart"
    )


def test_a_salted_run_is_not_checked(tmp_path: Path) -> None:
    """A run whose conversations carried its salt cannot find another run's prefixes: the
    same early cached tokens are this run's own, and no warning is given."""
    config = {"resolved": {"cache_salt": "r0badcafe"}}
    db = _db(tmp_path / "events.db", _early((160, 160, 160, 0, None, 160)), config=config)
    summary = summarize(db)
    assert summary.cache is not None
    assert summary.cache.warm_start.checked is False
    assert summary.cache.warm_start.warm is False
    assert not any("warm" in note for note in summary.verdict.notes)
    table = cache_table(summary)
    assert table is not None
    assert [
        "warm at the start (an earlier run's cache)",
        "cannot be: the run was salted (cache.salt)",
    ] in table.rows


def test_a_cold_start_is_not_flagged(tmp_path: Path) -> None:
    summary = summarize(_db(tmp_path / "events.db", _early((0, 0, 0, 0, None, 160))))
    assert summary.cache is not None
    warm = summary.cache.warm_start
    assert (warm.requests, warm.with_cached, warm.warm) == (4, 0, False)
    assert not any("warm" in note for note in summary.verdict.notes)


def test_a_warm_start_is_reported_without_an_ideal(tmp_path: Path) -> None:
    """The check needs only cached tokens: a run without ideal values still gets it, and its
    table shows that line alone; report.html shows that table and no cache plot."""
    db = _db(tmp_path / "events.db", _early((160, 0, 0, 0, 0, 0), ideal=None))
    summary = summarize(db)
    cache = summary.cache
    assert cache is not None
    assert cache.totals is None and cache.per_turn == []
    assert (cache.warm_start.requests, cache.warm_start.with_cached) == (5, 1)
    table = cache_table(summary)
    assert table is not None
    assert table.rows == [
        [
            "warm at the start (an earlier run's cache)",
            "yes: 1 of 5 requests before the first reply found 160 tokens",
        ]
    ]
    assert cache_turns_table(summary) is None and retention_table(summary) is None
    page = render(summary, series(db))
    assert page.count("<h2>Prefix cache") == 1
    assert "id='panel-cache_turn'" not in page and "id='panel-cache_time'" not in page


# ---------------------------------------------------------------------------------------------
# the report


def test_console_and_html_show_the_cache(tmp_path: Path) -> None:
    rows = _steady(lambda i: 0 if i >= 120 else 160)
    db = _db(tmp_path / "events.db", rows)
    summary = summarize(db)
    assert json.loads(to_json(summary))["cache"] == msgspec.to_builtins(summary.cache)
    titles = [t.title for t in all_tables(summary)]
    at = titles.index("Prefix cache: ideal against realised")
    assert titles[at : at + 3] == [
        "Prefix cache: ideal against realised",
        "Prefix cache per turn",
        "Prefix cache against idle time",
    ]
    table = cache_table(summary)
    assert table is not None
    facts = dict((label, value) for label, value in table.rows)
    assert facts["kept % (realised / ideal)"] == f"{_kept(rows) * 100:.1f}"
    assert facts["eviction cliff in run time"] == (
        "at 12.1 s: kept 100.0 % before, 0.0 % after; 10 sessions live"
    )
    assert facts["requests that fell short by a block or more"] == "80 (40.0 %)"
    buf = io.StringIO()
    print_report(summary, Console(file=buf, width=160, color_system=None))
    assert "Prefix cache: ideal against realised" in buf.getvalue()
    page = render(summary, series(db))
    assert page.count("<h2>Prefix cache") == 3
    assert "id='panel-cache_turn'" in page and "id='panel-cache_time'" in page


def test_a_long_run_shows_some_turns(tmp_path: Path) -> None:
    """300 turns: the first 12, then 12 spread evenly to the last."""
    summary = summarize(_db(tmp_path / "events.db", _two_sessions()[0]))
    assert summary.cache is not None
    turns = [
        CacheTurn(
            turn=t,
            requests=1,
            mean_prompt_tokens=10.0 * t,
            mean_ideal_tokens=10.0 * t - 10,
            mean_realised_tokens=None,
            kept=None,
        )
        for t in range(1, 301)
    ]
    cache = msgspec.structs.replace(summary.cache, per_turn=turns)
    table = cache_turns_table(msgspec.structs.replace(summary, cache=cache))
    assert table is not None
    shown = [int(row[0]) for row in table.rows]
    assert len(shown) == 24 and shown[:12] == list(range(1, 13)) and shown[-1] == 300
    assert shown == sorted(set(shown))
    assert table.title == "Prefix cache per turn (24 of 300 turns)"
