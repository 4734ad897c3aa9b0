"""SLOs and goodput from hand-built events.db files: every figure checked against values
computed here from the rows themselves (docs/metrics.md, "SLOs and goodput")."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from handmade import session_record, write_events_db
from turnbench.client.attempt import Attempt
from turnbench.metrics.goodput import grouped_percentile
from turnbench.metrics.model import to_json
from turnbench.metrics.series import series
from turnbench.metrics.summary import summarize as summary_of
from turnbench.report.console import print_report
from turnbench.report.goodput import goodput_tables
from turnbench.report.html import render
from turnbench.slo import SloConfig


def summarize(db: Path) -> dict[str, Any]:
    """The run's summary as summary.json holds it."""
    return msgspec.json.decode(to_json(summary_of(db)))


MS = 1_000_000
S = 1_000_000_000


@dataclass
class Req:
    """One attempt as the test thinks of it: times in whole ms from its send."""

    session: str
    turn: int
    sent_ms: int
    ttft_ms: int | None
    e2e_ms: int
    tokens: int | None
    gaps_ms: list[int] = field(default_factory=list)
    status: str = "ok"
    stage: str = "main"
    attempt: int = 1

    def attempt_row(self) -> Attempt:
        sent = (self.sent_ms + 1) * MS  # 1 ms on: t_sent_ns 0 marks an attempt never sent
        return Attempt(
            stage=self.stage,
            worker=0,
            session_id=self.session,
            conversation_id=self.session,
            turn_index=self.turn,
            attempt=self.attempt,
            t_intended_ns=sent,
            t_sent_ns=sent,
            t_first_token_ns=None if self.ttft_ms is None else sent + self.ttft_ms * MS,
            t_end_ns=sent + self.e2e_ms * MS,
            chunk_gaps=(np.array(self.gaps_ms, dtype="<i8") * MS).tobytes(),
            content_chunks=len(self.gaps_ms) + 1 if self.ttft_ms is not None else 0,
            completion_tokens=self.tokens,
            status=self.status,
            error_kind=None if self.status == "ok" else "http_5xx",
        )


def _session(sid: str, start_ms: int, end_ms: int, outcome: str, stage: str = "main") -> Any:
    return session_record(
        sid, start_ms * MS, end_ms * MS, outcome=outcome, stage=stage, turns_planned=3
    )


def _db(path: Path, reqs: list[Req], sessions: list[Any], slo: dict[str, Any] | None) -> Path:
    """An events.db holding these rows, its config's `slo` section as a run would store it."""
    config = {} if slo is None else {"slo": SloConfig.model_validate(slo).model_dump(mode="json")}
    return write_events_db(path, [r.attempt_row() for r in reqs], sessions, config=config)


# ---------------------------------------------------------------------------------------------
# the expected figures, computed the plain way


def value(r: Req, metric: str, percentile: float) -> float | None:
    """The attempt's value of a metric by the documented formulas; None when not defined."""
    ttft, e2e, out = r.ttft_ms, r.e2e_ms, r.tokens or 0
    if metric == "ttft":
        return ttft
    if metric == "e2e":
        return e2e
    if metric == "itl":
        return float(np.percentile(r.gaps_ms, percentile)) if r.gaps_ms else None
    if ttft is None or out <= 1:
        return None
    if metric == "tpot":
        return (e2e - ttft) / (out - 1)
    return (out - 1) / ((e2e - ttft) / 1000) if e2e > ttft else None


def in_class(r: Req, turns: str) -> bool:
    return turns == "all" or (r.turn == 1) == (turns == "first")


def meets(r: Req, o: dict[str, Any]) -> bool:
    v = value(r, o["metric"], o["percentile"])
    if v is None:
        return True
    return v >= o["threshold"] if o["metric"] == "output_tokens_per_s" else v <= o["threshold"]


def good(r: Req, objectives: list[dict[str, Any]]) -> bool:
    judged = r.stage == "main" and r.status in ("ok", "error")
    return (
        judged
        and r.status == "ok"
        and all(meets(r, o) for o in objectives if in_class(r, o.get("turns", "all")))
    )


def measured(reqs: list[Req], o: dict[str, Any]) -> float | None:
    ok = [r for r in reqs if r.stage == "main" and r.status == "ok" and in_class(r, o["turns"])]
    if o["metric"] == "itl":
        pool: list[float] = [g for r in ok for g in r.gaps_ms]
    else:
        pool = [v for r in ok if (v := value(r, o["metric"], o["percentile"])) is not None]
    return float(np.percentile(pool, o["percentile"])) if pool else None


def window_s(reqs: list[Req]) -> float:
    main = [r for r in reqs if r.stage == "main"]
    ends = [r.sent_ms + r.e2e_ms for r in main if r.status == "ok"]
    return (max(ends) - min(r.sent_ms for r in main)) / 1000


# ---------------------------------------------------------------------------------------------
# a seeded run of many conversations, every figure against the plain computation

TIERS = {
    "interactive": {
        "objectives": [
            "ttft p90 <= 120ms",
            "tpot p90 <= 25ms",
            "itl p99 <= 60ms",
            "output_tokens_per_s p25 >= 45",
            "ttft p50 later <= 60ms",
        ]
    },
    "batch": {"objectives": ["e2e p99 <= 1.5s"], "conversation_s": 4.0},
}


def _random_run(seed: int) -> tuple[list[Req], list[Any]]:
    rng = random.Random(seed)
    reqs: list[Req] = []
    sessions = []
    t = 0
    for i in range(40):
        sid = f"s{i}"
        start = t
        turns = rng.randint(1, 4)
        for turn in range(1, turns + 1):
            ttft = rng.randint(20, 200) if turn == 1 else rng.randint(5, 100)
            tokens = rng.choice([1, 2, 5, 20, 40])
            gaps = [rng.randint(1, 80) for _ in range(rng.randint(0, 12))]
            e2e = ttft + tokens * rng.randint(5, 40)
            status = "error" if rng.random() < 0.08 else "ok"
            if status == "ok":
                reqs.append(Req(sid, turn, t, ttft, e2e, tokens, gaps))
            else:
                reqs.append(Req(sid, turn, t, None, 30, None, status="error"))
            t += e2e + rng.randint(0, 500)
        outcome = rng.choice(["completed"] * 6 + ["aborted", "context_full", "unfinished"])
        sessions.append(_session(sid, start, t, outcome))
    # cancelled and warm-up attempts: never judged
    reqs.append(Req("s0", 9, t, None, 5, None, status="cancelled"))
    reqs.append(Req("w0", 1, 0, 1, 2, 2, [1], stage="warmup"))
    return reqs, sessions


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_figure_of_every_tier(tmp_path: Path, seed: int) -> None:
    reqs, sessions = _random_run(seed)
    summary = summarize(_db(tmp_path / "events.db", reqs, sessions, {"tiers": TIERS}))
    slo = summary["slo"]
    window = window_s(reqs)
    assert (
        slo["window_s"] == pytest.approx(window) == pytest.approx(summary["requests"]["window_s"])
    )
    judged = [r for r in reqs if r.stage == "main" and r.status in ("ok", "error")]
    assert set(slo["tiers"]) == set(TIERS)
    for name, tier_cfg in TIERS.items():
        tier = slo["tiers"][name]
        objectives = SloConfig.model_validate({"tiers": {name: tier_cfg}}).tiers[name].objectives
        dumped = [o.model_dump() for o in objectives]
        verdicts = []
        for got, o in zip(tier["objectives"], dumped, strict=True):
            want = measured(reqs, o)
            assert got["measured"] == pytest.approx(want), got["slo"]
            floor = o["metric"] == "output_tokens_per_s"
            passes = want >= o["threshold"] if floor else want <= o["threshold"]
            assert got["passed"] is passes, got["slo"]
            verdicts.append(passes)
            mine = [r for r in judged if r.status == "ok" and in_class(r, o["turns"])]
            defined = [r for r in mine if value(r, o["metric"], o["percentile"]) is not None]
            met = sum(meets(r, o) for r in defined)
            assert got["met_ratio"] == pytest.approx(met / len(defined)), got["slo"]
        assert tier["passed"] is all(verdicts)
        for turns in ("all", "first", "later"):
            cls = [r for r in judged if in_class(r, turns)]
            good_reqs = [r for r in cls if good(r, dumped)]
            share = tier["requests"][turns]
            assert share["total"] == len(cls) and share["good"] == len(good_reqs), turns
            assert share["ratio"] == pytest.approx(len(good_reqs) / len(cls))
            assert share["per_s"] == pytest.approx(len(good_reqs) / window)
            tokens = tier["output_tokens"][turns]
            assert tokens["total"] == sum(r.tokens or 0 for r in cls if r.status == "ok")
            assert tokens["good"] == sum(r.tokens or 0 for r in good_reqs)
            assert tokens["per_s"] == pytest.approx(tokens["good"] / window)
        limit = tier_cfg.get("conversation_s")
        conv_judged = [s for s in sessions if s.outcome != "unfinished"]
        conv_good = [
            s
            for s in conv_judged
            if any(r.session == s.session_id for r in judged)
            and all(good(r, dumped) for r in judged if r.session == s.session_id)
            and (limit is None or (s.t_end_ns - s.t_start_ns) / S <= limit)
        ]
        conv = tier["conversations"]
        assert conv["total"] == len(conv_judged) and conv["good"] == len(conv_good)
        assert conv["unfinished"] == len(sessions) - len(conv_judged)
        assert conv["ratio"] == pytest.approx(len(conv_good) / len(conv_judged))
        assert conv["per_s"] == pytest.approx(len(conv_good) / window)
    # the data exercise both outcomes, so a rule that always passed or failed would show
    interactive = slo["tiers"]["interactive"]["requests"]["all"]
    assert 0 < interactive["good"] < interactive["total"]


# ---------------------------------------------------------------------------------------------
# the rules, one at a time, with answers written out


def test_percentile_pass_fail_at_the_boundary(tmp_path: Path) -> None:
    """ttft 10, 20, ... 100 ms: p90 = 91 ms by numpy's linear rule, p50 = 55 ms."""
    reqs = [Req(f"s{i}", 1, 1000 * i, 10 * (i + 1), 200, 11) for i in range(10)]
    tiers = {
        "at": {"objectives": ["ttft.p90=91ms"]},
        "under": {"objectives": ["ttft.p90=90.9"]},
        "floor": {"objectives": ["output_tokens_per_s.p50=55.5"]},
    }
    slo = summarize(_db(tmp_path / "events.db", reqs, [], {"tiers": tiers}))["slo"]["tiers"]
    (at,) = slo["at"]["objectives"]
    assert at["measured"] == pytest.approx(91.0) and at["passed"] is True
    assert at["met_ratio"] == pytest.approx(0.9) and at["values"] == 10
    assert slo["at"]["passed"] is True
    (under,) = slo["under"]["objectives"]
    assert under["passed"] is False and slo["under"]["passed"] is False
    assert slo["at"]["requests"]["all"]["good"] == 9  # the 100 ms one misses 91 ms
    assert slo["under"]["requests"]["all"]["good"] == 9  # 90.9 ms: still only 100 ms misses
    # speed = 10 tokens / (200 - ttft) ms: 10/190 ... 10/100 tokens per ms; p50 = 55.5 tok/s
    speeds = sorted(10 / ((200 - 10 * (i + 1)) / 1000) for i in range(10))
    (floor,) = slo["floor"]["objectives"]
    assert floor["measured"] == pytest.approx(float(np.percentile(speeds, 50)))
    assert floor["bound"] == "min" and floor["unit"] == "tokens/s"
    assert floor["passed"] is (float(np.percentile(speeds, 50)) >= 55.5)
    assert slo["floor"]["requests"]["all"]["good"] == sum(s >= 55.5 for s in speeds)


def test_turn_classes_judge_their_own_turns(tmp_path: Path) -> None:
    """First turns may be slow (300 ms allowed), later turns must be fast (50 ms)."""
    reqs = [
        Req("a", 1, 0, 250, 400, 2),  # first, within 300
        Req("a", 2, 1000, 40, 100, 2),  # later, within 50
        Req("a", 3, 2000, 60, 100, 2),  # later, misses 50
        Req("b", 1, 3000, 350, 400, 2),  # first, misses 300
        Req("b", 2, 4000, 20, 100, 2),  # later, within 50
    ]
    tiers = {"t": {"objectives": ["ttft.p100.first=300ms", "ttft p100 later <= 50ms"]}}
    sessions = [_session("a", 0, 2100, "completed"), _session("b", 3000, 4100, "completed")]
    tier = summarize(_db(tmp_path / "events.db", reqs, sessions, {"tiers": tiers}))["slo"]["tiers"][
        "t"
    ]
    first, later = tier["objectives"]
    assert first["slo"] == "ttft p100 <= 300 ms (first turns)" and first["values"] == 2
    assert first["measured"] == 350 and first["passed"] is False
    assert later["measured"] == 60 and later["values"] == 3 and later["passed"] is False
    assert {k: (v["good"], v["total"]) for k, v in tier["requests"].items()} == {
        "all": (3, 5),
        "first": (1, 2),
        "later": (2, 3),
    }
    assert tier["output_tokens"]["all"]["good"] == 6
    assert tier["conversations"]["good"] == 0  # a misses on turn 3, b on turn 1


def test_failed_retried_and_undefined(tmp_path: Path) -> None:
    """A failed attempt is never good and spoils its conversation even when a retry
    succeeded; a one-token reply (no tpot) or a reply in one chunk (no itl) is not a miss."""
    reqs = [
        Req("a", 1, 0, 10, 50, 1, []),  # one token, one chunk: tpot and itl not defined
        Req("a", 2, 100, 10, 50, 5, [5, 5, 5, 5]),
        Req("b", 1, 200, None, 5, None, status="error"),
        Req("b", 1, 300, 10, 50, 5, [5, 5, 5, 5], attempt=2),  # the retry succeeded
        Req("c", 1, 400, 10, 50, 5, [5, 5, 5, 5]),
    ]
    sessions = [
        _session("a", 0, 150, "completed"),
        _session("b", 200, 350, "completed"),
        _session("c", 400, 450, "unfinished"),  # cut by the run's end: not judged
    ]
    tiers = {"t": {"objectives": ["tpot.p50=1ms", "itl.p50=1ms"]}}
    tier = summarize(_db(tmp_path / "events.db", reqs, sessions, {"tiers": tiers}))["slo"]["tiers"][
        "t"
    ]
    # tpot of the 5-token replies is (50 - 10) / 4 = 10 ms > 1: only the 1-token reply is good
    assert tier["requests"]["all"] == {
        "total": 5,
        "good": 1,
        "ratio": pytest.approx(0.2),
        "per_s": pytest.approx(1 / 0.45),
    }
    tpot, itl = tier["objectives"]
    assert tpot["values"] == 3 and tpot["met_ratio"] == 0.0 and tpot["measured"] == 10
    assert itl["values"] == 12 and itl["measured"] == 5
    assert tier["conversations"] == {
        "total": 2,
        "good": 0,
        "ratio": 0.0,
        "per_s": 0.0,
        "unfinished": 1,
    }
    loose = {"t": {"objectives": ["tpot.p50=20ms"]}}
    tier = summarize(_db(tmp_path / "loose.db", reqs, sessions, {"tiers": loose}))["slo"]["tiers"][
        "t"
    ]
    assert tier["requests"]["all"]["good"] == 4  # all but the failed attempt
    assert (tier["conversations"]["good"], tier["conversations"]["total"]) == (1, 2)  # b failed


def test_itl_of_a_request_is_its_own_percentile(tmp_path: Path) -> None:
    """`itl p50 <= 20ms` per request: gaps 10, 10, 100 have p50 10 (good) though the worst
    gap is 100; gaps 30, 30, 5 have p50 30 (a miss). The run pools all six: p50 = 20."""
    reqs = [Req("a", 1, 0, 10, 200, 4, [10, 10, 100]), Req("b", 1, 0, 10, 200, 4, [30, 30, 5])]
    tier = summarize(
        _db(tmp_path / "events.db", reqs, [], {"tiers": {"t": {"objectives": ["itl.p50=20"]}}})
    )["slo"]["tiers"]["t"]
    (itl,) = tier["objectives"]
    assert itl["measured"] == 20 and itl["passed"] is True and itl["values"] == 6
    assert tier["requests"]["all"]["good"] == 1 and itl["met_ratio"] == 0.5
    worst = summarize(
        _db(tmp_path / "worst.db", reqs, [], {"tiers": {"t": {"objectives": ["itl.p100=50"]}}})
    )["slo"]["tiers"]["t"]
    assert worst["requests"]["all"]["good"] == 1  # b's worst gap 30 is within 50, a's 100 not


def test_conversation_limit_and_warmup_sessions(tmp_path: Path) -> None:
    reqs = [
        Req("a", 1, 0, 10, 50, 2),
        Req("b", 1, 0, 10, 50, 2),
        Req("w", 2, 0, 10, 50, 2),  # a main-stage turn of a warm-up session
    ]
    sessions = [
        _session("a", 0, 2000, "completed"),  # 2 s
        _session("b", 0, 6000, "context_full"),  # 6 s: over the limit
        _session("w", 0, 100, "completed", stage="warmup"),
        _session("x", 0, 100, "context_full"),  # sent nothing: judged, not good
    ]
    tier = summarize(
        _db(tmp_path / "events.db", reqs, sessions, {"tiers": {"t": {"conversation_s": 5}}})
    )["slo"]["tiers"]["t"]
    assert tier["objectives"] == [] and tier["passed"] is None  # nothing to measure
    assert tier["requests"]["all"]["good"] == 3  # no objective: every ok attempt
    assert (tier["conversations"]["good"], tier["conversations"]["total"]) == (1, 3)


def test_no_data_is_null_and_no_slo_is_none(tmp_path: Path) -> None:
    reqs = [Req("a", 1, 0, 10, 50, 2)]
    tiers = {"t": {"objectives": ["ttft.p90.later=1s", "e2e.p90=1s"]}}
    tier = summarize(_db(tmp_path / "a.db", reqs, [], {"tiers": tiers}))["slo"]["tiers"]["t"]
    later, e2e = tier["objectives"]
    assert later["measured"] is None and later["passed"] is None and later["met_ratio"] is None
    assert e2e["passed"] is True and tier["passed"] is None
    assert tier["requests"]["later"] == {"total": 0, "good": 0, "ratio": None, "per_s": 0.0}
    assert summarize(_db(tmp_path / "b.db", reqs, [], None))["slo"] is None


@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=0,
        max_size=60,
    ),
    st.floats(0.5, 100),
)
def test_grouped_percentile_is_numpys_per_group(
    pairs: list[tuple[int, float]], percentile: float
) -> None:
    owner = np.array([o for o, _ in pairs], dtype=np.int64)
    values = np.array([v for _, v in pairs], dtype=np.float64)
    got = grouped_percentile(values, owner, 6, percentile)
    for group in range(6):
        mine = values[owner == group]
        if mine.size:
            assert got[group] == pytest.approx(np.percentile(mine, percentile), abs=1e-6)
        else:
            assert np.isnan(got[group])


def test_the_report_shows_both_tables(tmp_path: Path) -> None:
    reqs = [Req("a", 1, 0, 10, 50, 2), Req("a", 2, 100, 300, 400, 2)]
    sessions = [_session("a", 0, 500, "completed")]
    tiers = {"fast": {"objectives": ["ttft p90 <= 100ms"]}, "slow": {"objectives": ["e2e.p99=1s"]}}
    summary = summary_of(_db(tmp_path / "events.db", reqs, sessions, {"tiers": tiers}))
    slos, goodput = goodput_tables(summary)
    assert slos.rows[0][:2] == ["fast", "ttft p90 <= 100 ms"] and slos.rows[0][-1] == "FAIL"
    assert slos.rows[1] == ["fast", "every objective", "", "", "", "FAIL"]
    assert slos.rows[-1][-1] == "pass"
    assert goodput.header == ["what", "fast", "slow"]
    assert goodput.rows[0] == ["requests good / judged", "1 / 2 (50.0 %)", "2 / 2 (100.0 %)"]
    buf = io.StringIO()
    print_report(summary, Console(file=buf, width=160))
    assert "SLOs (percentiles" in buf.getvalue() and "Goodput" in buf.getvalue()
    page = render(summary, series(tmp_path / "events.db"))
    assert "ttft p90 &lt;= 100 ms" in page and "1 / 2 (50.0 %)" in page
    assert goodput_tables(msgspec.structs.replace(summary, slo=None)) == []
